"""The spawned child's entry points in tests: ``run_job`` with the template-render budget the
worker tests' conftest gives in-process jobs (the child is a fresh interpreter), and one that
halts at a stage boundary so a test can kill it exactly there."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.worker.job import Job, run_job
from pipeline.worker.job_spec import JobSpec
from uptake.bus.jobs import JobOutcome


def patient_run_job(spec: JobSpec) -> JobOutcome:
    import uptake.models.chat_templates as templates

    templates.RENDER_TIMEOUT_S = 120.0
    return run_job(spec)


def run_job_halting_after(spec: JobSpec, stage: str, marker: str) -> JobOutcome:
    """``run_job`` that stops for good once ``stage`` has ended and its tags are written, then
    touches ``marker``: the test's kill lands on that boundary, not wherever polling caught the
    job (a fast stage could otherwise end, and the next begin, between two polls). The
    heartbeat goes on, so the lease stays live as a real hung-then-killed holder's would."""
    run_stage = Job.run_stage

    def halting(self: Job, name: str, fn: Callable[[], Any], *args: Any, **kw: Any) -> Any:
        value = run_stage(self, name, fn, *args, **kw)
        if name == stage:
            self.flush_tags()
            Path(marker).touch()
            while True:
                time.sleep(60)
        return value

    Job.run_stage = halting  # type: ignore[method-assign]  # this child process only
    return patient_run_job(spec)

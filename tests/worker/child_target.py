"""The spawned child's entry point in tests: ``run_job`` with the template-render budget the
worker tests' conftest gives in-process jobs (the child is a fresh interpreter)."""

from __future__ import annotations

from pipeline.worker.job import run_job
from pipeline.worker.job_spec import JobSpec
from uptake.bus.jobs import JobOutcome


def patient_run_job(spec: JobSpec) -> JobOutcome:
    import uptake.models.chat_templates as templates

    templates.RENDER_TIMEOUT_S = 120.0
    return run_job(spec)

"""A job's train stage on several GPUs: ``uptake train`` under ``accelerate launch``.

When the track's recipe asks for ``hardware.num_processes`` > 1, the job does not train in its
own process: it runs the command ``uptake train --num-processes N`` runs (one rank per GPU,
FSDP2; ``pipeline.train.launch``), logging into the job's MLflow run (``--run-id``) and writing
its progress as JSON lines (``--progress-file``) that the job turns into ``run.stage`` events.
A stage timeout, a lost lease or the job's own end kills the launcher and every rank; a job
process killed outright takes them along too (the launcher gets SIGTERM when its parent dies,
and accelerate's agent stops its ranks on it). The GPUs are the job's: the worker pinned them
(``CUDA_VISIBLE_DEVICES``) before the job started.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from pipeline.train.launch import accelerate_command
from pipeline.train.results import TrainProgress
from pipeline.worker.failures import LaunchedOutOfMemory, PermanentJobFailure
from uptake.errors import InputError

POLL_S = 0.5
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
TAIL_LINES = 40
_OOM_MARKERS = ("torch.OutOfMemoryError", "CUDA out of memory", "OutOfMemoryError")


class LaunchedTraining(BaseModel):
    """Everything the launched ``uptake train`` needs; ``run`` returns the merged model dir."""

    model_config = ConfigDict(frozen=True)

    num_processes: int
    model_dir: Path
    recipe: Path  # the job's snapshot of the track's recipe: the bytes the job key holds
    recipe_origin: Path | None = None  # the track's recipe: its folder anchors data paths
    profile: str | None
    out_dir: Path
    run_id: str
    tracking_uri: str
    allowlist: tuple[str, ...] = ()
    repo_id: str | None = None
    halve_batch: bool = False

    @property
    def log_path(self) -> Path:
        return self.out_dir / "launch.log"

    @property
    def progress_path(self) -> Path:
        return self.out_dir / "progress.jsonl"

    def command(self) -> list[str]:
        return accelerate_command(
            num_processes=self.num_processes,
            model=self.model_dir,
            recipe=self.recipe,
            recipe_origin=self.recipe_origin,
            out=self.out_dir,
            resume=True,
            profile=self.profile,
            repo_id=self.repo_id,
            run_id=self.run_id,
            progress_file=self.progress_path,
            halve_batch=self.halve_batch,
        )

    def env(self) -> dict[str, str]:
        """The job's environment (its GPUs included) with this job's MLflow and allow-list:
        every rank reads the same settings."""
        return {
            **os.environ,
            "UPTAKE_MLFLOW_TRACKING_URI": self.tracking_uri,
            "UPTAKE_TRUST_REMOTE_CODE_ALLOWLIST": json.dumps(list(self.allowlist)),
        }

    def run(self, on_progress: Callable[[TrainProgress], None]) -> Path:
        """Launch, follow the progress file until the ranks exit, and classify the exit."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.progress_path.unlink(missing_ok=True)
        cmd = self.command()
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write("launching: " + " ".join(cmd) + "\n")
            log.flush()
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            follower = _ProgressFollower(self.progress_path)
            try:
                while proc.poll() is None:
                    follower.deliver(on_progress)
                    time.sleep(POLL_S)
                follower.deliver(on_progress)
            except BaseException:  # a stage timeout, a lost lease, the job being stopped
                _kill_group(proc)
                raise
        if proc.returncode != 0:
            raise self._failure(proc.returncode)
        return self.out_dir / "model"

    def _failure(self, code: int) -> Exception:
        tail = _tail(self.log_path, TAIL_LINES)
        last = next((line for line in reversed(tail) if line.strip()), "no output")
        if any(marker in line for line in tail for marker in _OOM_MARKERS):
            return LaunchedOutOfMemory(f"out of memory in a training rank: {last.strip()}")
        if code == InputError.exit_code:  # a refused model or bad input: no retry fixes it
            return PermanentJobFailure("train", f"launched training refused: {last.strip()}")
        return RuntimeError(
            f"launched training exited with code {code}: {last.strip()} (see {self.log_path})"
        )


class _ProgressFollower:
    """Reads the JSON lines the main rank appends, each line once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def deliver(self, on_progress: Callable[[TrainProgress], None]) -> None:
        if not self.path.is_file():
            return
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        complete, _, _ = data.rpartition(b"\n")
        if not complete:
            return
        self.offset += len(complete) + 1
        for line in complete.splitlines():
            on_progress(TrainProgress.model_validate_json(line))


def _die_with_parent() -> None:
    """In the launcher, before exec: SIGTERM when the job process dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the launcher and every descendant: torch's elastic agent starts each rank in a
    session of its own, so the launcher's process group alone would leave the ranks running."""
    import psutil

    try:
        victims = [*psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        victims = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for victim in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.kill()
    proc.wait()
    psutil.wait_procs(victims, timeout=10)


def _tail(path: Path, lines: int) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]

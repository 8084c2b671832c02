"""A track whose recipe asks for several processes trains under ``accelerate launch``: two
CPU ranks (gloo) stand in for two GPUs. The job logs into its one run, follows the main rank's
progress, registers once; a failing or interrupted launch is classified and leaves no rank."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from pipeline.train.results import TrainProgress
from pipeline.worker.failures import JobFailed, LaunchedOutOfMemory, is_oom
from pipeline.worker.job import run_job
from pipeline.worker.job_spec import job_key
from pipeline.worker.launched_train import LaunchedTraining
from pipeline.worker.plan import RECIPE_SNAPSHOT
from tests.worker.helpers import build_release_dir, dir_release, job_spec, make_track
from tests.worker.runs_topic import of_type, run_events
from uptake.retention import job_dir

# two ranks, each importing torch, transformers and TRL, twice
pytestmark = [pytest.mark.slow, pytest.mark.one_backend, pytest.mark.timeout(900)]

STEPS = 4


@pytest.fixture(scope="module")
def launched(stack, drops: Path, unique, tmp_path_factory) -> dict[str, Any]:
    repo = f"acme/{unique('ranks')}"
    build_release_dir(drops, repo)
    release = dir_release(drops, repo)
    track = make_track(
        tmp_path_factory.mktemp("tracks"),
        "legal",
        unique("uptake-ranks"),
        sft={"max_steps": STEPS},
        hardware={"num_processes": 2},
    )
    spec = job_spec(stack, release, track)
    return {"spec": spec, "outcome": run_job(spec), "key": job_key(spec)}


def test_two_ranks_train_into_the_jobs_run_and_one_version(stack, launched) -> None:
    assert launched["outcome"].ok, launched["outcome"]
    spec = launched["spec"]
    c = MlflowClient(tracking_uri=stack.tracking_uri, registry_uri=stack.tracking_uri)
    versions = c.search_model_versions(f"name = '{spec.track.registered_model}'")
    assert len(versions) == 1
    run = c.get_run(versions[0].run_id)
    assert run.data.metrics["train.steps"] == STEPS
    assert run.data.params["recipe.hardware.num_processes"] == "2"
    work = job_dir(stack.state_dir, launched["key"].digest)
    first = (work / "train" / "launch.log").read_text().splitlines()[0]
    assert "accelerate.commands.launch --num_processes 2" in first
    # the ranks read the job's snapshot of the recipe (the bytes its key holds), with the
    # track's folder anchoring the recipe's relative data paths
    assert f"--recipe {work / 'plan' / RECIPE_SNAPSHOT} " in first
    assert f"--recipe-origin {Path(spec.track.recipe).resolve()} " in first
    assert f"--run-id {run.info.run_id}" in first


def test_the_main_ranks_progress_became_run_stage_events(stack, launched) -> None:
    events = run_events(stack, launched["spec"].release.release_id, expected=8)
    train = [e for e in of_type(events, "run.stage") if e.stage == "train" and e.total_steps]
    assert train and train[-1].step == train[-1].total_steps == STEPS
    assert len(of_type(events, "candidate.registered")) == 1


def _training(tmp_path: Path, stack, launched) -> LaunchedTraining:
    spec = launched["spec"]
    return LaunchedTraining(
        num_processes=2,
        model_dir=spec.release.endpoint,
        recipe=spec.track.recipe,
        profile="cpu",
        out_dir=tmp_path / "train",
        run_id="0" * 32,  # never reached: the ranks are stopped at their first progress
        tracking_uri=stack.tracking_uri,
    )


def _processes_using(path: Path) -> list[int]:
    """Live processes whose command line names ``path`` (the launcher and its ranks)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(path).encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_an_interrupted_launch_leaves_no_rank(tmp_path, stack, launched) -> None:
    """What a stage timeout or a lost lease does: the exception kills the process group."""
    training = _training(tmp_path, stack, launched)
    seen: list[int] = []

    def stop_at_first(p: TrainProgress) -> None:
        seen.extend(_processes_using(training.out_dir))
        raise TimeoutError("stage timed out")

    with pytest.raises(TimeoutError):
        training.run(stop_at_first)
    assert len(seen) >= 3  # the launcher and two ranks were running
    assert _processes_using(training.out_dir) == []


def test_a_job_process_killed_outright_takes_the_ranks_along(tmp_path, stack, launched) -> None:
    """``kill -9`` of the process running the launch (the job's child, as the worker kills a
    hung job): nothing can clean up in it, yet no rank is left training."""
    long = make_track(tmp_path / "tracks", "legal", sft={"max_steps": 2000})
    training = _training(tmp_path, stack, launched).model_copy(update={"recipe": long.recipe})
    script = (
        "import sys\n"
        "from pipeline.worker.launched_train import LaunchedTraining\n"
        "LaunchedTraining.model_validate_json(sys.argv[1]).run(lambda p: None)\n"
    )
    job = subprocess.Popen([sys.executable, "-c", script, training.model_dump_json()])
    try:
        deadline = time.monotonic() + 300
        while not (training.progress_path.is_file() and training.progress_path.read_text()):
            assert job.poll() is None and time.monotonic() < deadline, "no progress"
            time.sleep(0.2)
        assert len(_processes_using(training.out_dir)) >= 3
    finally:
        job.kill()
        job.wait()
    deadline = time.monotonic() + 30
    while (left := _processes_using(training.out_dir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:  # do not leak them into the rest of the suite
        os.kill(pid, signal.SIGKILL)
    assert left == [], "ranks outlived the killed job process"


@pytest.mark.parametrize(
    ("code", "line", "kind"),
    [
        (1, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "oom"),
        (2, "error: preflight refused the model: unsupported architecture", "refused"),
        (1, "RuntimeError: NCCL error in: ProcessGroupNCCL.cpp", "other"),
    ],
)
def test_a_failed_launch_is_classified(tmp_path, stack, launched, code, line, kind) -> None:
    training = _training(tmp_path, stack, launched)
    training.out_dir.mkdir(parents=True)
    training.log_path.write_text(f"launching: ...\nTraceback (most recent call last):\n{line}\n")
    failure = training._failure(code)
    if kind == "oom":
        assert isinstance(failure, LaunchedOutOfMemory) and is_oom(failure)
    elif kind == "refused":
        assert isinstance(failure, JobFailed) and failure.retryable is False
        assert "unsupported architecture" in failure.reason
    else:
        assert not is_oom(failure) and not isinstance(failure, JobFailed)
        assert "NCCL error" in str(failure) and "exited with code 1" in str(failure)

"""Failure classes: permanent refusals fail at once with ``run.failed`` (retryable false, the
stage, a reason naming the problem, the run link); an MLflow outage is retried; the pure parts
of the out-of-memory retry and of the failure classes."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import torch
from mlflow import MlflowClient

from pipeline.train.recipe import halved_batch, load_recipe
from pipeline.worker.failures import JobFailed, is_oom, is_permanent, is_transient
from pipeline.worker.job import run_job
from pipeline.worker.tags import FAILURE_RETRYABLE_TAG, FAILURE_TAG
from tests.train.helpers import make_remote_code_model, memo_rows
from tests.worker.helpers import build_release_dir, dir_release, job_spec, make_track, suite_rows
from tests.worker.runs_topic import of_type, run_events
from uptake.errors import InputError, PermanentError
from uptake.stack.process import free_port


def _failed(stack, release_id: str):
    events = of_type(run_events(stack, release_id, expected=3), "run.failed")
    assert len(events) == 1, events
    return events[0]


def _run_of(stack, event):
    c = MlflowClient(tracking_uri=stack.tracking_uri)
    return c.get_run(event.run_id)


@pytest.fixture(scope="module")
def base_drop(drops: Path, unique) -> str:
    repo = f"acme/{unique('fail')}"
    build_release_dir(drops, repo)
    return repo


@pytest.mark.slow
def test_suite_overlapping_training_data_fails_permanently(
    stack, drops, base_drop, unique, tmp_path
) -> None:
    rows = memo_rows(32)
    leaked = rows[3]["messages"][0]["content"]
    suite = [
        *suite_rows(),
        {**suite_rows()[0], "id": "t-5", "messages": [{"role": "user", "content": "New one"}]},
        {**suite_rows()[0], "id": "leak-1", "messages": [{"role": "user", "content": leaked}]},
    ]
    track = make_track(tmp_path, "leaky", unique("uptake-leaky"), train_rows=rows, suite=suite)
    release = dir_release(drops, base_drop)
    with pytest.raises(JobFailed) as err:
        run_job(job_spec(stack, release, track))
    assert err.value.stage == "holdout" and err.value.retryable is False
    event = _failed(stack, release.release_id)
    assert event.stage == "holdout" and event.retryable is False and event.track == "leaky"
    assert "'t-5'" in event.reason and "'leak-1'" in event.reason
    assert event.run_url and event.run_url.startswith(stack.tracking_uri)
    assert f"/runs/{event.run_id}" in event.run_url
    run = _run_of(stack, event)
    assert run.info.status == "FAILED"
    assert (
        run.data.tags[FAILURE_RETRYABLE_TAG] == "false" and "leak-1" in run.data.tags[FAILURE_TAG]
    )


@pytest.mark.slow
def test_model_needing_remote_code_is_refused(stack, drops, unique, tmp_path) -> None:
    repo = f"acme/{unique('remote')}"
    make_remote_code_model(build_release_dir(drops, repo))
    release = dir_release(drops, repo)
    track = make_track(tmp_path, "legal", unique("uptake-remote"))
    with pytest.raises(JobFailed) as err:
        run_job(job_spec(stack, release, track))
    assert err.value.stage == "preflight" and not err.value.retryable
    event = _failed(stack, release.release_id)
    assert event.stage == "preflight" and not event.retryable
    assert "trust_remote_code" in event.reason
    versions = MlflowClient(tracking_uri=stack.tracking_uri).search_model_versions(
        f"name = '{track.registered_model}'"
    )
    assert versions == []


def test_a_drop_changed_since_detection_is_refused(stack, drops, unique, tmp_path) -> None:
    repo = f"acme/{unique('changed')}"
    folder = build_release_dir(drops, repo)
    release = dir_release(drops, repo)
    (folder / "README.md").write_text("edited after detection\n", encoding="utf-8")
    track = make_track(tmp_path, "legal", unique("uptake-changed"))
    with pytest.raises(JobFailed) as err:
        run_job(job_spec(stack, release, track))
    assert err.value.stage == "fetch" and not err.value.retryable
    assert "changed since it was detected" in _failed(stack, release.release_id).reason


@contextmanager
def late_proxy(upstream: str, after_s: float) -> Iterator[str]:
    """A TCP forwarder to ``upstream`` that starts listening only ``after_s`` seconds from
    now: until then every connection is refused (MLflow down)."""
    up = urlsplit(upstream)
    port = free_port()
    stop = threading.Event()

    def pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def serve() -> None:
        if stop.wait(after_s):
            return
        with socket.create_server(("127.0.0.1", port)) as srv:
            srv.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _ = srv.accept()
                except TimeoutError:
                    continue
                back = socket.create_connection((up.hostname, up.port))
                for a, b in ((conn, back), (back, conn)):
                    threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join(5)


def test_mlflow_unreachable_at_first_is_retried(
    stack, drops, base_drop, unique, tmp_path, monkeypatch
) -> None:
    """MLflow down when the job starts: the lookup is retried with backoff until it answers,
    and the job goes on (to a hold-out refusal here, which needs no training)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    rows = memo_rows(32)
    suite = [{**suite_rows()[0], "id": rows[0]["id"]}]
    track = make_track(tmp_path, "outage", unique("uptake-outage"), train_rows=rows, suite=suite)
    release = dir_release(drops, base_drop)
    started = time.monotonic()
    with late_proxy(stack.tracking_uri, after_s=2.0) as uri:
        spec = job_spec(stack, release, track, tracking_uri=uri, transient_retries=4)
        with pytest.raises(JobFailed) as err:
            run_job(spec)
    assert time.monotonic() - started >= 2.0
    assert err.value.stage == "holdout", err.value  # got past the outage


def test_halved_batch_keeps_the_effective_batch(tmp_path) -> None:
    track = make_track(tmp_path, "oom", "uptake-oom", sft={"batch_size": 8})
    recipe = load_recipe(track.recipe).resolve("cpu")
    smaller, note = halved_batch(recipe)
    sft, small = recipe.stages.sft, smaller.stages.sft
    assert (small.batch_size, small.gradient_accumulation_steps) == (4, 2)
    assert small.batch_size * small.gradient_accumulation_steps == sft.batch_size
    assert smaller.sha256 == recipe.sha256 and smaller.source == recipe.source
    assert note == "sft: batch 8x1 -> 4x2"


def test_failure_classes() -> None:
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory"))
    assert not is_oom(RuntimeError("other"))
    assert is_permanent(PermanentError("x")) and is_permanent(InputError("x"))
    assert is_transient(ConnectionError("down")) and not is_transient(InputError("bad"))
    import httpx
    from huggingface_hub.errors import HfHubHTTPError, RevisionNotFoundError

    def answer(status: int) -> httpx.Response:
        return httpx.Response(status, request=httpx.Request("GET", "http://hub.invalid/x"))

    assert is_permanent(RevisionNotFoundError("gone", response=answer(404)))
    assert is_transient(HfHubHTTPError("down", response=answer(503)))
    assert not is_transient(HfHubHTTPError("forbidden", response=answer(403)))


def test_failure_classes_go_by_class_not_name() -> None:
    """Subclasses count (a gated repo is a missing one to the hub client); a hub that cannot be
    reached with nothing cached is an ``EntryNotFoundError`` too, yet transient."""
    import filelock
    import httpx
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
    )

    from pipeline.worker.failures import PermanentJobFailure, RetryableJobFailure, StageTimeout
    from pipeline.worker.lease import JobLeaseLost

    answer = httpx.Response(404, request=httpx.Request("GET", "http://hub.invalid/x"))
    assert is_permanent(GatedRepoError("gated", response=answer))
    assert is_permanent(RemoteEntryNotFoundError("no such file", response=answer))
    offline = LocalEntryNotFoundError("hub unreachable and nothing cached")
    assert not is_permanent(offline) and is_transient(offline)
    assert is_transient(filelock.Timeout("/tmp/x.lock"))
    assert not is_permanent(StageTimeout("train")) and not is_transient(StageTimeout("train"))
    assert is_permanent(PermanentJobFailure("train", "refused"))
    assert not is_permanent(RetryableJobFailure("fetch", "down"))
    assert not is_permanent(JobLeaseLost("taken over")) and not is_transient(JobLeaseLost("x"))


def test_content_hash_agrees_with_the_watcher(drops, base_drop) -> None:
    from pipeline.worker.fetch import content_hash, visible_files
    from watcher.sources.dirs import content_hash as watcher_hash

    folder = drops / base_drop
    files = visible_files(folder)
    assert content_hash(folder, files) == watcher_hash(folder, files)
    link_dir = drops / "acme" / "linked"
    shutil.copytree(folder, link_dir)
    (link_dir / "escape.json").symlink_to("/etc/hostname")
    from pipeline.worker.fetch import FetchRefused

    with pytest.raises(FetchRefused, match="links outside"):
        visible_files(link_dir)

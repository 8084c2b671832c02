"""A hub outage longer than every in-job retry (issue 19, defect 2), through the worker on the
real broker and MLflow: the release stays uncommitted, is tried again with growing delays, and
is adopted once the hub answers; the release ends in exactly one terminal event.

The issue's 5 minutes are scaled down: the hub client retries a 503 for ~23 s by itself
(huggingface_hub's ``http_backoff``: 1 + 2 + 4 + 8 + 8 s), the job's own stage retries are
off here, so one attempt's budget is ~23 s; the outage (40 s from the hub's first request,
however long the job took to start) outlasts it, which used to end the release (committed,
never adopted). The worker's delays start at 2 s."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.worker.service import WorkerService
from tests.worker.file_hub import FileHub
from tests.worker.helpers import build_release_dir, make_track
from tests.worker.runs_topic import of_type, run_events
from tests.worker.test_job_hub_tracks import QUIRKY, _hub_release
from tests.worker.test_service import publish
from uptake.settings import Settings
from uptake.watcher_config import HfSourceConfig

pytestmark = [pytest.mark.slow, pytest.mark.one_backend]
OUTAGE_S = 40.0


@pytest.mark.timeout(600)
def test_a_hub_outage_past_every_in_job_retry_ends_adopted_with_one_terminal_event(
    stack: Settings, unique, tmp_path: Path
) -> None:
    repo = f"qwenish/{unique('outage')}"
    folder = build_release_dir(tmp_path / "src", repo, QUIRKY)
    legal = make_track(tmp_path / "tracks", "legal", unique("uptake-hub-outage"))
    with FileHub() as hub:
        release = _hub_release(hub, repo, folder)
        s = stack.model_copy(
            update={
                "tracks": [legal],
                "sources": [
                    HfSourceConfig(name="hf", kind="hf", endpoint=hub.url, authors=["qwenish"])
                ],
                "worker": stack.worker.model_copy(
                    update={
                        "device": "cpu",
                        "experiment": "uptake-hub-outage-test",
                        "transient_retries": 0,  # one attempt: the hub client's retries
                        "retry_delay_s": 2.0,
                        "retry_delay_max_s": 8.0,
                        "retry_window_s": 300.0,
                        "eval_batch_size": 4,
                        "progress_interval_s": 0.0,
                    }
                ),
            }
        )
        hub.down_for(OUTAGE_S)
        started = time.monotonic()
        publish(s, release)
        worker = WorkerService(
            s, name="outage", group_id=unique("pipeline"), live=False, static_membership=False
        )
        stats = worker.run_once(timeout_s=480)
        took = time.monotonic() - started
        statuses = [status for _m, _p, status in hub.log]
    assert took > OUTAGE_S and 503 in statuses and 200 in statuses
    (result,) = stats.results
    assert result.ok and result.attempts >= 2, result
    c = MlflowClient(tracking_uri=s.tracking_uri, registry_uri=s.tracking_uri)
    assert len(c.search_model_versions(f"name = '{legal.registered_model}'")) == 1
    events = run_events(s, release.release_id, expected=3)
    registered = of_type(events, "candidate.registered")
    given_up = [e for e in of_type(events, "run.failed") if not e.retryable]
    assert len(registered) == 1 and given_up == []  # one terminal event: registered
    attempts = [e.attempts for e in of_type(events, "run.failed")]
    assert attempts == list(range(1, len(attempts) + 1))  # each failed attempt said so

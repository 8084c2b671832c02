"""An MLflow outage mid-training that outlasts both MLflow's client retries and the lease's
TTL (issue 19, defect 1): the job keeps its lease and its work, waits for MLflow, and ends
with one registered version and one ``candidate.registered``, no ``run.failed``."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.worker.job import run_job
from pipeline.worker.job_spec import job_key
from pipeline.worker.tags import JOB_KEY_TAG
from tests.worker.helpers import build_release_dir, dir_release, job_spec, make_track
from tests.worker.mlflow_proxy import OutageProxy
from tests.worker.runs_topic import of_type, run_events
from uptake.mlflow_contract import stage_time_tag

pytestmark = [pytest.mark.slow, pytest.mark.one_backend]

TTL_S = 3.0
OUTAGE_S = 10.0  # > TTL_S, and the client makes no retries of its own (below)


@pytest.mark.timeout(600)
def test_an_outage_longer_than_retries_and_ttl_mid_training_ends_registered_once(
    stack, drops: Path, unique, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # as operators bound calls
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    repo = f"acme/{unique('outage')}"
    build_release_dir(drops, repo)
    release = dir_release(drops, repo)
    track = make_track(tmp_path, "legal", unique("uptake-outage"))
    with OutageProxy(stack.tracking_uri) as proxy:
        proxy.down_after(stage_time_tag("train", "started").encode(), OUTAGE_S)
        spec = job_spec(
            stack,
            release,
            track,
            tracking_uri=proxy.url,
            lease_ttl_s=TTL_S,
            heartbeat_s=0.5,
            retry_backoff_max_s=1.0,
        )
        outcome = run_job(spec)
    assert outcome.ok
    assert len(proxy.outages) == 1
    start, end = proxy.outages[0]
    assert end - start >= OUTAGE_S
    c = MlflowClient(tracking_uri=stack.tracking_uri, registry_uri=stack.tracking_uri)
    versions = c.search_model_versions(f"name = '{track.registered_model}'")
    assert len(versions) == 1
    key = job_key(spec)
    runs = c.search_runs(
        [c.get_experiment_by_name(spec.worker.experiment).experiment_id],
        filter_string=f"tags.`{JOB_KEY_TAG}` = '{key.digest}'",
    )
    assert [r.info.status for r in runs] == ["FINISHED"]
    events = run_events(stack, release.release_id, expected=1)
    assert len(of_type(events, "candidate.registered")) == 1
    assert of_type(events, "run.failed") == []

"""``run_url`` in ``run.failed`` carries no ``user:password@`` of the tracking URI (issue 19,
defect 5): the link goes out on the bus and into alerts."""

from __future__ import annotations

from pathlib import Path

from pipeline.worker.job_events import failure_event
from pipeline.worker.runs import run_url
from tests.worker.helpers import job_spec
from tests.worker.test_service import release, track
from uptake.settings import Settings


def test_run_url_drops_the_tracking_uris_credentials(tmp_path: Path) -> None:
    url = run_url("https://ops:s3cret@mlflow.example:5000/", "7", "abc")
    assert url == "https://mlflow.example:5000/#/experiments/7/runs/abc"


def test_run_failed_never_publishes_a_password(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, kafka_bootstrap="127.0.0.1:9", mlflow_tracking_uri="http://x")
    spec = job_spec(
        s, release(), track(tmp_path, "legal"), tracking_uri="http://ops:s3cret@mlflow:5000"
    )
    event = failure_event(
        spec,
        "train",
        "boom",
        retryable=True,
        run_id="abc",
        run_url="http://ops:s3cret@mlflow:5000/#/experiments/1/runs/abc",
    )
    assert event.run_url == "http://mlflow:5000/#/experiments/1/runs/abc"
    assert "s3cret" not in event.to_json().decode()

"""A hub release (loopback hub serving files) of another architecture with tokenizer quirks,
adopted into two tracks: two versions in two registered models, one download, one baseline
per suite; a hub that answers 503 for a while is retried; pickled weights never come down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from pipeline.worker.failures import JobFailed
from pipeline.worker.job import run_job
from pipeline.worker.tags import BASELINE_CACHED_TAG, FETCH_CACHED_TAG
from tests.worker.file_hub import FileHub
from tests.worker.helpers import build_release_dir, job_spec, make_track
from tests.worker.runs_topic import of_type, run_events
from uptake.events import ReleaseDetected, release_id
from uptake.mlflow_contract import CHALLENGER_ALIAS, RELEASE_ID_TAG
from uptake.testing.tiny_models import TinyModelSpec

pytestmark = [pytest.mark.slow, pytest.mark.one_backend]

# Qwen2, no chat template of its own, pad == EOS: preflight adapts, the recipe stays the same
QUIRKY = TinyModelSpec(arch="qwen2", chat_template="none", pad_equals_eos=True)


def _hub_release(hub: FileHub, repo: str, folder: Path) -> ReleaseDetected:
    """Serve ``folder`` as ``repo`` on ``hub``: the release the watcher's hub source publishes."""
    sha = hub.add(repo, folder)
    return ReleaseDetected(
        producer="test-watcher",
        release_id=release_id("hf", repo, sha),
        source="hf",
        repo_id=repo,
        revision=sha,
        endpoint=hub.url,
    )


@pytest.fixture(scope="module")
def two_tracks(stack, unique, tmp_path_factory) -> dict[str, Any]:
    src = tmp_path_factory.mktemp("hub-src")
    repo = f"qwenish/{unique('tiny')}"
    folder = build_release_dir(src, repo, QUIRKY)
    (folder / "pytorch_model.bin").write_bytes(b"not a pickle anyone should load")
    root = tmp_path_factory.mktemp("tracks")
    legal = make_track(root, "legal", unique("uptake-legal"))
    firm = make_track(root, "firm-b", unique("uptake-firm-b"), suite_path=legal.suite)
    with FileHub() as hub:
        release = _hub_release(hub, repo, folder)
        # more 503s than the hub client retries by itself: the worker's own retry is needed
        hub.fail(*[503] * 7)
        first = run_job(job_spec(stack, release, legal))
        second = run_job(job_spec(stack, release, firm))
        log = list(hub.log)
        downloads = {name: hub.downloads(name) for name in ("model.safetensors", "config.json")}
    return {
        "release": release,
        "tracks": (legal, firm),
        "outcomes": (first, second),
        "log": log,
        "downloads": downloads,
    }


def test_two_tracks_two_versions_in_two_models(stack, two_tracks) -> None:
    assert all(o.ok for o in two_tracks["outcomes"])
    c = MlflowClient(tracking_uri=stack.tracking_uri, registry_uri=stack.tracking_uri)
    runs = []
    for track in two_tracks["tracks"]:
        versions = c.search_model_versions(f"name = '{track.registered_model}'")
        assert len(versions) == 1
        assert versions[0].tags[RELEASE_ID_TAG] == two_tracks["release"].release_id
        alias = c.get_model_version_by_alias(track.registered_model, CHALLENGER_ALIAS)
        assert alias.version == versions[0].version
        runs.append(c.get_run(versions[0].run_id))
    assert runs[0].info.run_id != runs[1].info.run_id
    # one download and one baseline (same suite) for both tracks
    assert runs[0].data.tags[FETCH_CACHED_TAG] == "false"
    assert runs[1].data.tags[FETCH_CACHED_TAG] == "true"
    assert runs[0].data.tags[BASELINE_CACHED_TAG] == "false"
    assert runs[1].data.tags[BASELINE_CACHED_TAG] == "true"
    assert two_tracks["downloads"] == {"model.safetensors": 1, "config.json": 1}
    # the quirks were adapted by preflight, not refused
    tags = runs[0].data.tags
    assert tags["uptake.preflight.ok"] == "true"
    assert "chat_template" in tags["uptake.preflight.adapters"]


def test_pickled_weights_are_never_requested(stack, two_tracks) -> None:
    assert not [p for _, p, _ in two_tracks["log"] if p.endswith(".bin")]
    models = Path(stack.state_dir) / "models"
    assert not list(models.rglob("*.bin"))


def test_hub_503_was_retried_then_succeeded(stack, two_tracks) -> None:
    statuses = [s for _, _, s in two_tracks["log"]]
    assert statuses[:7] == [503] * 7 and 200 in statuses[7:]
    events = run_events(stack, two_tracks["release"].release_id, expected=20)
    assert len(of_type(events, "candidate.registered")) == 2
    assert not of_type(events, "run.failed")
    assert {e.track for e in of_type(events, "run.started")} == {"legal", "firm-b"}


def test_a_hub_down_past_every_retry_fails_the_job_as_retryable(
    stack, unique, tmp_path_factory
) -> None:
    """Transient failures are retried a bounded number of times, then the job fails at fetch
    with ``retryable: true`` (a later delivery may succeed) and the reason, for the alerter."""
    src = tmp_path_factory.mktemp("hub-down")
    repo = f"qwenish/{unique('down')}"
    folder = build_release_dir(src, repo, QUIRKY)
    track = make_track(tmp_path_factory.mktemp("tracks-down"), "legal", unique("uptake-down"))
    with FileHub() as hub:
        release = _hub_release(hub, repo, folder)
        hub.fail(*[503] * 1000)  # down for longer than any retry budget
        spec = job_spec(stack, release, track, transient_retries=1, retry_backoff_s=0.1)
        with pytest.raises(JobFailed) as err:
            run_job(spec)
        requests = len(hub.log)
    assert err.value.stage == "fetch" and err.value.retryable is True
    assert requests >= 2  # the worker's own retry came on top of the hub client's
    (failed,) = of_type(run_events(stack, release.release_id, expected=2), "run.failed")
    assert failed.stage == "fetch" and failed.retryable is True and "503" in failed.reason
    assert failed.run_url and f"/runs/{failed.run_id}" in failed.run_url
    assert not of_type(run_events(stack, release.release_id), "candidate.registered")

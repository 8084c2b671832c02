"""The bus cannot redirect a token or make the worker copy a folder (issue 19, item 3).

A ``release.detected`` names a source; where its files come from (endpoint, token, root
folder) is the worker's own config. The fast tests pin the rule (``pipeline/worker/trust.py``);
the service test publishes forged releases on the real broker to a worker whose children
really fetch: the forged hub endpoint (a loopback hub that records requests) sees no request
and no token, nothing is copied, and the same worker then fetches the next good release.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from pipeline.worker.fetch import FetchRefused, fetch_release
from pipeline.worker.job_spec import JobSpec
from pipeline.worker.trust import SourceRefused, TrustedSource, release_folder, trusted_source
from tests.worker.file_hub import FileHub
from tests.worker.runs_topic import run_events
from tests.worker.test_service import group, publish, track, with_tracks
from uptake.events import ReleaseDetected, RunFailed, release_id
from uptake.settings import Settings
from uptake.watcher_config import DirSourceConfig, HfSourceConfig

TOKEN_ENV = "UPTAKE_TEST_TRUST_TOKEN"
TOKEN = "hf_secret_for_the_configured_hub_only"


def hub_release(endpoint: str | None, repo: str = "acme/tiny", rev: str = "a" * 40, src="hub"):
    return ReleaseDetected(
        release_id=release_id(src, repo, rev),
        source=src,
        repo_id=repo,
        revision=rev,
        endpoint=endpoint,
        producer="forger",
    )


def dir_release_at(endpoint: str | None, repo: str = "acme/x", src: str = "drops"):
    return hub_release(endpoint, repo, "b" * 64, src)


def sources(root: Path, hub_url: str = "https://hub.example") -> list:
    return [
        HfSourceConfig(name="hub", kind="hf", endpoint=hub_url, authors=["acme"], token_env="T"),
        DirSourceConfig(name="drops", kind="dir", path=root),
    ]


# -- the rule ---------------------------------------------------------------------------------


def test_the_endpoint_and_token_come_from_the_config(tmp_path: Path) -> None:
    source = trusted_source(sources(tmp_path), hub_release(None))
    assert (source.kind, source.endpoint, source.token_env) == ("hf", "https://hub.example", "T")
    same = trusted_source(sources(tmp_path), hub_release("https://hub.example/"))
    assert same == source


def test_an_unknown_source_is_refused_as_permanent(tmp_path: Path) -> None:
    with pytest.raises(SourceRefused, match="source 'elsewhere' is not configured") as err:
        trusted_source(sources(tmp_path), hub_release(None, src="elsewhere"))
    assert not err.value.retryable


def test_another_endpoint_is_refused_with_the_differing_field(tmp_path: Path) -> None:
    forged = hub_release("http://127.0.0.1:9/steal")
    with pytest.raises(SourceRefused) as err:
        trusted_source(sources(tmp_path), forged)
    assert "endpoint 'http://127.0.0.1:9/steal' (configured: 'https://hub.example')" in str(
        err.value
    )
    # an absolute path on a hub source (what made the worker copy any folder) likewise
    with pytest.raises(SourceRefused, match="endpoint '/etc'"):
        trusted_source(sources(tmp_path), hub_release("/etc"))


def test_user_info_in_the_configured_endpoint_is_not_a_difference(tmp_path: Path) -> None:
    conf = sources(tmp_path, "https://bob:pw@mirror.example/hf")
    source = trusted_source(conf, hub_release("https://mirror.example/hf"))
    assert source.endpoint == "https://bob:pw@mirror.example/hf"  # basic auth to the mirror
    assert source.public == "https://mirror.example/hf"


def test_a_directory_release_resolves_inside_its_root(tmp_path: Path) -> None:
    root = tmp_path / "drops"
    (root / "acme" / "x").mkdir(parents=True)
    source = trusted_source(sources(root), dir_release_at(str(root / "acme" / "x")))
    assert release_folder(source, dir_release_at(None)) == root / "acme" / "x"
    outside = tmp_path / "secrets" / "acme" / "x"
    outside.mkdir(parents=True)
    with pytest.raises(SourceRefused, match=r"endpoint .*secrets"):
        trusted_source(sources(root), dir_release_at(str(outside)))
    for repo in ("../secrets", "acme/..", "/etc/passwd", "acme/x/y", ".hidden/x", "acme"):
        with pytest.raises(SourceRefused, match="is not <org>/<model>"):
            trusted_source(sources(root), dir_release_at(None, repo=repo))
    (root / "evil").mkdir()
    (root / "evil" / "link").symlink_to(outside)
    with pytest.raises(SourceRefused, match="outside the root"):
        trusted_source(sources(root), dir_release_at(None, repo="evil/link"))


def test_fetch_without_a_configured_source_fetches_nothing(tmp_path: Path) -> None:
    with pytest.raises(FetchRefused, match="not configured"):
        fetch_release(hub_release("http://127.0.0.1:9"), tmp_path, source=None)
    assert not (tmp_path / "models").exists()


def test_fetch_checks_the_release_against_its_source_again(tmp_path: Path) -> None:
    """The child does not trust the spec's pairing either: a mismatch is refused there too."""
    source = TrustedSource(name="hub", kind="hf", endpoint="https://hub.example")
    with pytest.raises(SourceRefused, match="endpoint"):
        fetch_release(hub_release("http://127.0.0.1:9"), tmp_path, source=source)


# -- a forged release on the bus, end to end --------------------------------------------------


def fetching_job(spec: JobSpec) -> None:
    """The job's fetch stage as it runs in the worker's child: source from the spec."""
    fetch_release(spec.release, spec.state_dir, source=spec.source, allowlist=spec.allowlist)


def _model_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text('{"model_type": "llama"}')
    (root / "model.safetensors").write_bytes(b"weights")
    return root


@pytest.mark.slow
def test_a_forged_release_sends_no_token_copies_nothing_and_the_worker_goes_on(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)  # the spawned child inherits it
    weights = _model_folder(tmp_path / "hub-src")
    drops = tmp_path / "drops"
    (drops / "acme").mkdir(parents=True)
    outside = _model_folder(tmp_path / "private" / "acme" / "x")
    (outside / "secret.txt").write_text("not for the bus")
    with FileHub() as good, FileHub() as recorder:
        sha = good.add("acme/tiny", weights)
        recorder.add("acme/tiny", weights)  # it would serve the files, if anyone asked
        s = with_tracks(settings, tmp_path, track(tmp_path, "legal"), preload=False)
        s = s.model_copy(
            update={
                "sources": [
                    HfSourceConfig(
                        name="hub",
                        kind="hf",
                        endpoint=good.url,
                        authors=["acme"],
                        token_env=TOKEN_ENV,
                    ),
                    DirSourceConfig(name="drops", kind="dir", path=drops),
                ]
            }
        )
        forged_hub = hub_release(recorder.url, rev=sha)
        forged_dir = dir_release_at(str(outside))
        unknown = hub_release(recorder.url, src="not-configured", rev=sha)
        good_release = hub_release(good.url, rev=sha)
        publish(s, forged_hub, forged_dir, unknown, good_release)

        from pipeline.worker.service import WorkerService

        worker = WorkerService(
            s, group_id=group(s), target=fetching_job, live=False, static_membership=False
        )
        runner = threading.Thread(target=lambda: worker.run(install_signals=False), daemon=True)
        runner.start()
        deadline = time.monotonic() + 120
        while worker.stats.releases < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        worker.stop()
        runner.join(60)
        assert not runner.is_alive()

        assert recorder.log == [] and recorder.auth == []  # no request, no token
        assert good.auth and set(good.auth) == {f"Bearer {TOKEN}"}
    outcomes = {r.release_id: (r.ok, r.retryable, r.stage) for r in worker.stats.results}
    assert outcomes == {
        forged_hub.release_id: (False, False, "fetch"),
        forged_dir.release_id: (False, False, "fetch"),
        unknown.release_id: (False, False, "fetch"),
        good_release.release_id: (True, False, None),
    }
    failed = {e.release_id: e for e in run_events(s, expected=3) if isinstance(e, RunFailed)}
    assert "endpoint" in failed[forged_hub.release_id].reason
    assert recorder.url in failed[forged_hub.release_id].reason
    assert str(outside) in failed[forged_dir.release_id].reason
    assert "not configured" in failed[unknown.release_id].reason
    assert not failed[forged_hub.release_id].retryable
    models = s.state_dir / "models"
    assert not list(models.rglob("secret.txt"))
    fetched = [p.relative_to(models).as_posix() for p in models.rglob("model.safetensors")]
    assert len(fetched) == 1 and sha in fetched[0]  # only the good release's files
    assert os.environ[TOKEN_ENV] == TOKEN

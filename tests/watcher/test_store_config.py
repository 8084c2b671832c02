"""State store on SQLite (and PostgreSQL when available), configuration, and `uptake up` wiring."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from uptake.bus import EventProducer, ensure_topics
from uptake.errors import ConfigError
from uptake.events import ReleaseDetected, release_id
from uptake.settings import Settings, load_settings
from uptake.stack.local import LocalStack
from uptake.watcher_config import DirSourceConfig, HfSourceConfig
from watcher.metrics import WatcherMetrics
from watcher.outbox import Outbox
from watcher.snapshot import RepoSnapshot
from watcher.store import Decision, Store

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "postgres":
        url = os.environ.get("UPTAKE_TEST_POSTGRES_URL")
        if not url:
            pytest.skip("UPTAKE_TEST_POSTGRES_URL not set")
        import sqlalchemy as sa

        name = f"uptake_watcher_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        db = Store(str(sa.engine.make_url(url).set(database=name)))
        try:
            yield db
        finally:
            db.close()
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
        return
    db = Store(f"sqlite:///{tmp_path / 'state' / 'watcher.db'}")
    yield db
    db.close()


def _release(repo: str, rev: str) -> Decision:
    snap = RepoSnapshot(repo_id=repo, revision=rev)
    event = ReleaseDetected(
        release_id=release_id("hub", repo, rev), source="hub", repo_id=repo, revision=rev
    )
    return Decision(snap, "released", event=event)


def test_one_release_per_revision_and_pending_until_published(
    store: Store, settings: Settings
) -> None:
    assert store.apply("hub", [_release("acme/a", "1")], initialize=True) == ["hub:acme/a@1"]
    # a second poll, a webhook or a restart deciding the same again: no second release
    assert store.apply("hub", [_release("acme/a", "1")]) == []
    assert store.apply("hub", [_release("acme/a", "2")]) == ["hub:acme/a@2"]
    pending = store.pending()
    assert [p.release_id for p in pending] == ["hub:acme/a@1", "hub:acme/a@2"]
    first = ReleaseDetected.model_validate_json(pending[0].payload)
    assert first.event_id != ReleaseDetected.model_validate_json(pending[1].payload).event_id
    ensure_topics(settings, [settings.kafka.topics.releases])
    with EventProducer(settings) as producer:
        assert Outbox(store, producer, WatcherMetrics()).flush() == 2
    assert store.pending() == []
    rows = {r["release_id"]: r for r in store.release_rows()}
    assert rows["hub:acme/a@1"]["status"] == "published" and rows["hub:acme/a@1"]["attempts"] == 1
    assert rows["hub:acme/a@1"]["published_at"].tzinfo is not None
    assert store.source_state("hub").initialized_at is not None
    assert store.record_failure("hub", "boom") == 1 and store.record_failure("hub", "x") == 2
    store.record_success("hub")
    assert store.source_state("hub").consecutive_failures == 0


def test_example_config_and_issue_shape_load() -> None:
    settings = load_settings(ROOT / "examples" / "watcher.yaml")
    hub, drops = settings.sources
    assert isinstance(hub, HfSourceConfig) and isinstance(drops, DirSourceConfig)
    assert hub.interval_s == 300 and drops.interval_s == 60
    assert hub.filters.exclude == ["*-GGUF", "*-AWQ", "*-FP8"]
    assert hub.filters.max_params == 40_000_000_000


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            {"name": "h", "kind": "hf", "authors": ["a"], "token": "hf_x"},
            "sources.0.token: secrets",
        ),
        ({"name": "h", "kind": "hf", "authors": ["a"], "interval_s": "soon"}, "interval_s"),
        ({"name": "h", "kind": "hf"}, "needs authors or search"),
        ({"name": "h", "kind": "ftp"}, "sources.0"),
        ({"name": "h", "kind": "dir", "path": "/x", "filters": {"exclud": []}}, "exclud: unknown"),
    ],
)
def test_config_mistakes_are_one_clear_line(tmp_path: Path, source: dict, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"sources": [source]}))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert "hf_x" not in str(info.value)


def test_duplicate_source_names_and_env_only_webhook_secret(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    dup = {"name": "x", "kind": "dir", "path": "/m"}
    path.write_text(yaml.safe_dump({"sources": [dup, dup]}))
    with pytest.raises(ConfigError, match="duplicate source name 'x'"):
        load_settings(path)
    path.write_text(yaml.safe_dump({"watcher": {"webhook_secret": "s"}}))
    with pytest.raises(ConfigError, match="UPTAKE_WATCHER__WEBHOOK_SECRET"):
        load_settings(path)


@pytest.mark.one_backend
def test_up_starts_the_watcher_and_waits_for_its_health(mlflow_settings: Settings) -> None:
    """The services start against the test MLflow (without one, serving waits for an MLflow on
    the default port and gives up: the test passed only while another test's MLflow sat there)."""
    settings = mlflow_settings
    stack = LocalStack(settings)  # no sources configured: the watcher idles and serves HTTP
    stack.start(("services",))
    try:
        (watcher,) = [p for p in stack.processes if p.name == "watcher"]
        assert watcher.running and watcher.address.startswith("http://127.0.0.1:")
    finally:
        stack.stop()
    assert not watcher.running
    assert not (settings.state_dir / "watcher.json").exists()

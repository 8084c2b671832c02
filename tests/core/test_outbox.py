"""The shared outbox on a real broker: one bad row never stalls the rows after it.

Both outboxes are the same code (``uptake.outbox``) over different tables: the registry's
``outbox`` table and the watcher's releases table. A stored row whose payload no longer
decodes (written by a newer uptake, corrupted, or absurdly nested) is marked ``failed`` with
its reason; the rows after it are published in order, each once.
"""

from __future__ import annotations

import json

import sqlalchemy as sa

from registry import db as registry_db
from registry.outbox import Outbox as RegistryOutbox
from tests.core.kafka_helpers import read_topic
from uptake.bus import EventProducer, ensure_topics
from uptake.events import ChampionChanged, ReleaseDetected, decode_event, release_id
from uptake.settings import Settings
from watcher.metrics import WatcherMetrics
from watcher.outbox import Outbox as WatcherOutbox
from watcher.snapshot import RepoSnapshot
from watcher.store import Decision, Store, releases_table

# a stored payload that can never become an event again: 100,000 nested lists
UNDECODABLE = "[" * 100_000 + "]" * 100_000


def _changed(version: int) -> ChampionChanged:
    return ChampionChanged(
        registered_model="uptake-legal",
        version=str(version),
        previous_version=str(version - 1),
        model_uri=f"models:/uptake-legal/{version}",
    )


def test_registry_outbox_marks_a_bad_row_failed_and_publishes_the_rest(
    settings: Settings,
) -> None:
    ensure_topics(settings, [settings.kafka.topics.decisions])
    engine = registry_db.make_engine(settings)
    with EventProducer(settings) as producer:
        outbox = RegistryOutbox(engine, producer)
        with engine.begin() as conn:
            for version in (2, 3, 4):
                outbox.add(conn, _changed(version))
        t = registry_db.outbox
        with engine.begin() as conn:  # the second row goes bad in the store
            bad_id = conn.execute(
                sa.select(t.c.id).order_by(t.c.id).offset(1).limit(1)
            ).scalar_one()
            conn.execute(sa.update(t).where(t.c.id == bad_id).values(payload=UNDECODABLE))

        assert outbox.flush() == 2
        assert outbox.pending() == 0
        ((failed_id, reason),) = outbox.failed()
        assert failed_id == str(bad_id) and "payload does not decode" in reason
        assert outbox.flush() == 0  # a failed row is not retried, a published one not resent

    records = read_topic(settings.kafka_bootstrap, settings.kafka.topics.decisions, expected=2)
    assert [decode_event(r.value).version for r in records] == ["2", "4"]
    engine.dispose()


def test_watcher_outbox_publishes_releases_after_a_bad_one(settings: Settings) -> None:
    ensure_topics(settings, [settings.kafka.topics.releases])
    store = Store(f"sqlite:///{settings.state_dir / 'watcher.db'}")
    decisions = []
    for repo in ("acme/a", "acme/b", "acme/c"):
        rid = release_id("hub", repo, "1")
        event = ReleaseDetected(release_id=rid, source="hub", repo_id=repo, revision="1")
        decisions.append(
            Decision(RepoSnapshot(repo_id=repo, revision="1"), "released", event=event)
        )
    for decision in decisions:  # one poll each, so that the publishing order is a, b, c
        store.apply("hub", [decision])
    t = releases_table
    with store.engine.begin() as conn:
        bad = {"type": "release.detected", "schema_version": 99}  # from a newer uptake
        conn.execute(
            sa.update(t).where(t.c.release_id == "hub:acme/a@1").values(payload=json.dumps(bad))
        )
    metrics = WatcherMetrics()
    try:
        with EventProducer(settings) as producer:
            assert WatcherOutbox(store, producer, metrics).flush() == 2
        rows = {r["release_id"]: r for r in store.release_rows()}
        assert rows["hub:acme/a@1"]["status"] == "failed"
        assert [p.release_id for p in store.pending()] == []
        assert metrics.outbox_pending._value.get() == 0
        with store.engine.connect() as conn:
            reason = conn.execute(
                sa.select(t.c.last_error).where(t.c.release_id == "hub:acme/a@1")
            ).scalar_one()
        assert "payload does not decode" in reason and "\n" not in reason
    finally:
        store.close()
    records = read_topic(settings.kafka_bootstrap, settings.kafka.topics.releases, expected=2)
    assert sorted(decode_event(r.value).repo_id for r in records) == ["acme/b", "acme/c"]

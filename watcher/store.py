"""The watcher's durable state: repos seen per source, the release outbox, source health.

SQLAlchemy Core on any URL (SQLite under the state dir by default, PostgreSQL in production),
set up by ``uptake.db`` (timestamps are UTC epoch seconds, aware datetimes in Python). The
releases table is the watcher's outbox (``uptake.outbox``): a release row and its pending
event are one row, written in the poll's transaction.
A release row is keyed by its release id, so whatever happens (a crash, a retried poll, a
duplicated webhook) one (source, repo, revision) is one release; its event, with its event id,
is stored with the row so a re-publish sends the very same event.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from uptake.db import (
    UtcDateTime,
    check_schema,
    datetimes_to_epoch,
    make_engine,
    open_schema,
)
from uptake.events import ReleaseDetected
from uptake.outbox import PENDING, outbox_columns
from uptake.settings import Settings
from watcher.snapshot import RepoSnapshot

Outcome = Literal["baseline", "released", "skipped", "deferred"]

metadata = sa.MetaData()
TS = UtcDateTime
SCHEMA_VERSION = 1  # 0: before uptake.db (timestamps as DATETIME)

sources_table = sa.Table(
    "watcher_sources",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("initialized_at", TS),
    sa.Column("scope", sa.Text),  # JSON list: the authors (or dir) the baseline covers
    sa.Column("consecutive_failures", sa.Integer, nullable=False, default=0),
    sa.Column("last_success_at", TS),
    sa.Column("last_failure_at", TS),
    sa.Column("last_error", sa.Text),
    sa.Column("alert_firing", sa.Boolean, nullable=False, default=False),
)

repos_table = sa.Table(
    "watcher_repos",
    metadata,
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("repo_id", sa.String(300), primary_key=True),
    sa.Column("revision", sa.String(128), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(32)),
    sa.Column("detail", sa.Text),
    sa.Column("fingerprint", sa.String(128)),
    sa.Column("deferred_since", TS),
    sa.Column("first_seen_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.Index("ix_watcher_repos_updated", "updated_at"),
)

releases_table = sa.Table(
    "watcher_releases",
    metadata,
    sa.Column("release_id", sa.String(512), primary_key=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("repo_id", sa.String(300), nullable=False),
    sa.Column("revision", sa.String(128), nullable=False),
    *outbox_columns(TS),  # payload, status (pending | published | failed), attempts, …
    sa.Column("repo_time", TS),  # createdAt / lastModified at the source, for latency
    sa.Column("detected_at", TS, nullable=False),
    sa.UniqueConstraint("source", "repo_id", "revision", name="uq_watcher_release"),
    sa.Index("ix_watcher_releases_status", "status"),
)


def _now() -> datetime:
    return datetime.now(UTC)


def _epoch_timestamps(conn: Connection) -> None:
    """Version 0 -> 1: DATETIME columns become UTC epoch seconds (``uptake.db``)."""
    datetimes_to_epoch(
        conn,
        {
            t.name: [c.name for c in t.columns if isinstance(c.type, UtcDateTime)]
            for t in metadata.sorted_tables
        },
    )


@dataclass(frozen=True)
class KnownRepo:
    revision: str
    outcome: Outcome
    fingerprint: str | None
    deferred_since: datetime | None = None


@dataclass(frozen=True)
class Decision:
    """What one poll concluded about one repo; a poll's decisions are written together."""

    snap: RepoSnapshot
    outcome: Outcome
    reason: str = ""
    detail: str = ""
    event: ReleaseDetected | None = None
    repo_time: datetime | None = None
    deferred_since: datetime | None = None


@dataclass(frozen=True)
class PendingRelease:
    release_id: str
    payload: str
    repo_time: datetime | None
    attempts: int


@dataclass(frozen=True)
class SourceState:
    name: str
    initialized_at: datetime | None
    scope: tuple[str, ...]
    consecutive_failures: int
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_error: str | None
    alert_firing: bool


def default_store_url(settings: Settings) -> str:
    return settings.watcher.store_url or f"sqlite:///{settings.state_dir / 'watcher.db'}"


class Store:
    """All reads and writes of watcher state; safe to share between threads."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """``create=False``: a reader (``uptake status``) that never creates or migrates."""
        self.url = sa.engine.make_url(url)
        self.engine: Engine = make_engine(url)
        try:
            if create:
                migrations = {1: _epoch_timestamps}
                open_schema(
                    self.engine,
                    metadata,
                    store="watcher",
                    version=SCHEMA_VERSION,
                    migrations=migrations,
                )
            else:
                check_schema(self.engine, metadata, store="watcher", version=SCHEMA_VERSION)
        except BaseException:
            self.engine.dispose()
            raise

    @classmethod
    def for_settings(cls, settings: Settings) -> Store:
        return cls(default_store_url(settings))

    def close(self) -> None:
        self.engine.dispose()

    # -- sources ----------------------------------------------------------------------------

    def source_state(self, name: str) -> SourceState | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(sources_table).where(sources_table.c.name == name)).first()
        return _source_state(row) if row else None

    def sources(self) -> list[SourceState]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(sources_table).order_by(sources_table.c.name)).all()
        return [_source_state(r) for r in rows]

    def _ensure_source(self, conn: Connection, name: str) -> None:
        _insert_ignore(
            conn,
            sources_table,
            [{"name": name, "consecutive_failures": 0, "alert_firing": False}],
            ["name"],
        )

    def record_success(self, name: str) -> None:
        with self.engine.begin() as conn:
            self._ensure_source(conn, name)
            conn.execute(
                sources_table.update()
                .where(sources_table.c.name == name)
                .values(consecutive_failures=0, last_success_at=_now())
            )

    def record_failure(self, name: str, error: str) -> int:
        """Count one more failed poll in a row; return the count."""
        with self.engine.begin() as conn:
            self._ensure_source(conn, name)
            conn.execute(
                sources_table.update()
                .where(sources_table.c.name == name)
                .values(
                    consecutive_failures=sources_table.c.consecutive_failures + 1,
                    last_failure_at=_now(),
                    last_error=error[:2000],
                )
            )
            count: int = conn.execute(
                sa.select(sources_table.c.consecutive_failures).where(sources_table.c.name == name)
            ).scalar_one()
            return count

    def set_alert(self, name: str, firing: bool) -> None:
        with self.engine.begin() as conn:
            self._ensure_source(conn, name)
            conn.execute(
                sources_table.update()
                .where(sources_table.c.name == name)
                .values(alert_firing=firing)
            )

    # -- repos ------------------------------------------------------------------------------

    def known(self, source: str) -> dict[str, KnownRepo]:
        t = repos_table
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    t.c.repo_id,
                    t.c.revision,
                    t.c.outcome,
                    t.c.fingerprint,
                    t.c.deferred_since,
                ).where(t.c.source == source)
            ).all()
        return {
            r.repo_id: KnownRepo(
                r.revision,
                r.outcome,
                r.fingerprint,
                r.deferred_since,
            )
            for r in rows
        }

    def refresh_fingerprints(self, source: str, fingerprints: Mapping[str, str]) -> None:
        """Same content, new mtimes: remember the new fingerprint so it is not hashed again."""
        t = repos_table
        with self.engine.begin() as conn:
            for repo_id, fingerprint in fingerprints.items():
                conn.execute(
                    t.update()
                    .where(t.c.source == source, t.c.repo_id == repo_id)
                    .values(fingerprint=fingerprint)
                )

    def apply(
        self,
        source: str,
        decisions: Sequence[Decision],
        *,
        initialize: bool = False,
        scope: Sequence[str] | None = None,
    ) -> list[str]:
        """Write one poll's decisions in one transaction; return the ids of new releases.

        A release already stored (same release id) is left as it is: no second release.
        ``scope`` (when given) records what the baseline now covers.
        """
        now = _now()
        created: list[str] = []
        with self.engine.begin() as conn:
            self._ensure_source(conn, source)
            if decisions:
                _upsert(
                    conn,
                    repos_table,
                    [
                        {
                            "source": source,
                            "repo_id": d.snap.repo_id,
                            "revision": d.snap.revision,
                            "outcome": d.outcome,
                            "reason": d.reason or None,
                            "detail": d.detail or None,
                            "fingerprint": d.snap.fingerprint,
                            "deferred_since": d.deferred_since,
                            "first_seen_at": now,
                            "updated_at": now,
                        }
                        for d in decisions
                    ],
                    keys=["source", "repo_id"],
                    update=[
                        "revision",
                        "outcome",
                        "reason",
                        "detail",
                        "fingerprint",
                        "deferred_since",
                        "updated_at",
                    ],
                )
            for d in decisions:
                if d.event is None:
                    continue
                inserted = _insert_ignore(
                    conn,
                    releases_table,
                    [
                        {
                            "release_id": d.event.release_id,
                            "source": source,
                            "repo_id": d.event.repo_id,
                            "revision": d.event.revision,
                            "status": PENDING,
                            "payload": d.event.model_dump_json(),
                            "repo_time": d.repo_time,
                            "detected_at": now,
                            "attempts": 0,
                        }
                    ],
                    ["release_id"],
                )
                if inserted:
                    created.append(d.event.release_id)
            if scope is not None:
                conn.execute(
                    sources_table.update()
                    .where(sources_table.c.name == source)
                    .values(scope=json.dumps(sorted(scope)))
                )
            if initialize:
                conn.execute(
                    sources_table.update()
                    .where(sources_table.c.name == source, sources_table.c.initialized_at.is_(None))
                    .values(initialized_at=now)
                )
        return created

    # -- outbox -----------------------------------------------------------------------------

    def pending(self) -> list[PendingRelease]:
        t = releases_table
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.c.release_id, t.c.payload, t.c.repo_time, t.c.attempts)
                .where(t.c.status == PENDING)
                .order_by(t.c.detected_at, t.c.release_id)
            ).all()
        return [PendingRelease(r.release_id, r.payload, r.repo_time, r.attempts) for r in rows]

    # -- reporting --------------------------------------------------------------------------

    def release_rows(self, limit: int | None = None) -> list[dict[str, Any]]:
        t = releases_table
        query = sa.select(
            t.c.release_id,
            t.c.source,
            t.c.repo_id,
            t.c.revision,
            t.c.status,
            t.c.detected_at,
            t.c.published_at,
            t.c.attempts,
        ).order_by(t.c.detected_at.desc(), t.c.release_id)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [_row_dict(r) for r in conn.execute(query).all()]

    def skip_rows(self, limit: int | None = None) -> list[dict[str, Any]]:
        t = repos_table
        query = (
            sa.select(
                t.c.source,
                t.c.repo_id,
                t.c.revision,
                t.c.outcome,
                t.c.reason,
                t.c.detail,
                t.c.updated_at,
            )
            .where(t.c.outcome.in_(("skipped", "deferred")))
            .order_by(t.c.updated_at.desc(), t.c.repo_id)
        )
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [_row_dict(r) for r in conn.execute(query).all()]


def _row_dict(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


def _source_state(row: Any) -> SourceState:
    return SourceState(
        name=row.name,
        initialized_at=row.initialized_at,
        scope=tuple(json.loads(row.scope)) if row.scope else (),
        consecutive_failures=row.consecutive_failures,
        last_success_at=row.last_success_at,
        last_failure_at=row.last_failure_at,
        last_error=row.last_error,
        alert_firing=bool(row.alert_firing),
    )


def _dialect_insert(conn: Connection, table: sa.Table) -> Any:
    name = conn.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)
    if name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    return None


def _insert_ignore(
    conn: Connection, table: sa.Table, rows: Iterable[dict[str, Any]], keys: list[str]
) -> int:
    """Insert rows whose key is not there yet; return how many were inserted."""
    rows = list(rows)
    stmt = _dialect_insert(conn, table)
    if stmt is not None:  # RETURNING: rowcount is unreliable for executemany on psycopg
        stmt = stmt.on_conflict_do_nothing(index_elements=keys).returning(
            *[table.c[k] for k in keys]
        )
        return len(conn.execute(stmt, rows).all())
    inserted = 0
    for row in rows:
        where = [table.c[k] == row[k] for k in keys]
        if conn.execute(sa.select(sa.literal(1)).select_from(table).where(*where)).first():
            continue
        conn.execute(table.insert().values(**row))
        inserted += 1
    return inserted


def _upsert(
    conn: Connection,
    table: sa.Table,
    rows: list[dict[str, Any]],
    *,
    keys: list[str],
    update: list[str],
) -> None:
    stmt = _dialect_insert(conn, table)
    if stmt is not None:
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=keys, set_={c: stmt.excluded[c] for c in update}
            ),
            rows,
        )
        return
    for row in rows:
        where = [table.c[k] == row[k] for k in keys]
        if conn.execute(sa.select(sa.literal(1)).select_from(table).where(*where)).first():
            conn.execute(table.update().where(*where).values(**{c: row[c] for c in update}))
        else:
            conn.execute(table.insert().values(**row))

"""SQL state stores: one engine setup, one timestamp convention, one schema-version check.

Every service keeps its small durable state (watcher repos and releases, registry decisions,
leases, alert deliveries, outboxes) in one SQL database: SQLite under the state dir by
default, PostgreSQL in production.

**Timestamps are UTC epoch seconds stored as floats**, in every table of every store. Why:
they compare, sort and do arithmetic (lease expiry, backoff, freshness windows) the same way
on SQLite and PostgreSQL, and there is no time zone to lose — SQLite keeps no time zone, so
``DateTime(timezone=True)`` comes back naive from it and every read had to re-attach UTC.
Code that computes with times uses :class:`EpochSeconds` (floats in Python); code that shows
or subtracts datetimes uses :class:`UtcDateTime` (aware UTC datetimes in Python). Both store
the same column type.

Each store stamps its schema version in ``uptake_schema``. Opening a store written by an
older uptake runs its migrations once (e.g. the watcher's datetimes become epoch seconds);
one written by a newer uptake is refused with a one-line error instead of being misread.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.types import TypeDecorator

from uptake.errors import DependencyError

Migration = Callable[[Connection], None]
"""Brings one store from version N-1 to N inside one transaction."""

schema_versions = sa.Table(
    "uptake_schema",
    sa.MetaData(),
    sa.Column("store", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)


class StateStoreError(DependencyError):
    """A state store that this uptake cannot use as it is (written by a newer version)."""


def now() -> float:
    """The current time in the stores' convention: UTC epoch seconds."""
    return time.time()


class EpochSeconds(TypeDecorator[float]):
    """A timestamp column: UTC epoch seconds, floats in Python."""

    impl = sa.Float
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> float | None:
        return _to_epoch(value)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp column stored as UTC epoch seconds, aware UTC datetimes in Python."""

    impl = sa.Float
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> float | None:
        return _to_epoch(value)

    def process_result_value(self, value: Any, dialect: Any) -> datetime | None:
        return None if value is None else datetime.fromtimestamp(float(value), UTC)


TIMESTAMP_TYPES = (EpochSeconds, UtcDateTime)


def _to_epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        # everything uptake stores is UTC (as the watcher always did)
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.timestamp()
    return float(value)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (status, history) never block the writer
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine shared by a service's threads: SQLite in WAL mode, its folder created."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(parsed, pool_pre_ping=True)


def open_schema(
    engine: Engine,
    metadata: sa.MetaData,
    *,
    store: str,
    version: int,
    migrations: Mapping[int, Migration] | None = None,
) -> None:
    """Create ``store``'s tables, or migrate them from an older version; refuse a newer one.

    ``migrations[n]`` upgrades version ``n - 1`` to ``n``. A database that has the store's
    tables but no stamp predates stamping: it is version 0.
    """
    steps = dict(migrations or {})
    with engine.begin() as conn:
        schema_versions.create(conn, checkfirst=True)
        found = conn.execute(
            sa.select(schema_versions.c.version).where(schema_versions.c.store == store)
        ).scalar_one_or_none()
        if found is None:
            existing = set(sa.inspect(conn).get_table_names())
            found = 0 if existing & set(metadata.tables) else version
        if found > version:
            raise StateStoreError(
                f"the {store} state store at {_shown(engine)} has schema version {found}, "
                f"written by a newer uptake (this one knows up to {version}); upgrade uptake "
                "or point it at another store"
            )
        for step in range(found + 1, version + 1):
            if step not in steps:
                raise StateStoreError(
                    f"the {store} state store at {_shown(engine)} has schema version {found} "
                    f"and there is no migration to version {step}; move it aside to start afresh"
                )
            steps[step](conn)
        metadata.create_all(conn)
        _stamp(conn, store, version)


def check_schema(engine: Engine, metadata: sa.MetaData, *, store: str, version: int) -> None:
    """Read-only check for readers that must not create or migrate (e.g. ``uptake status``)."""
    with engine.connect() as conn:
        existing = set(sa.inspect(conn).get_table_names())
        found: int | None = None
        if schema_versions.name in existing:
            found = conn.execute(
                sa.select(schema_versions.c.version).where(schema_versions.c.store == store)
            ).scalar_one_or_none()
    if found is None:
        found = 0 if existing & set(metadata.tables) else version
    if found < version:
        raise StateStoreError(
            f"the {store} state store at {_shown(engine)} has schema version {found}, written "
            f"by an older uptake; start the {store} once to migrate it to version {version}"
        )
    if found > version:
        raise StateStoreError(
            f"the {store} state store at {_shown(engine)} has schema version {found}, written "
            f"by a newer uptake (this one reads up to {version}); upgrade uptake"
        )


def _stamp(conn: Connection, store: str, version: int) -> None:
    t = schema_versions
    updated = conn.execute(sa.update(t).where(t.c.store == store).values(version=version)).rowcount
    if updated:
        return
    row = {"store": store, "version": version}
    if conn.dialect.name in ("sqlite", "postgresql"):
        # another process opening the same store at the same moment may stamp it first
        insert = importlib.import_module(f"sqlalchemy.dialects.{conn.dialect.name}").insert
        conn.execute(insert(t).values(row).on_conflict_do_nothing(index_elements=["store"]))
    else:
        conn.execute(sa.insert(t).values(row))


def _shown(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def datetimes_to_epoch(conn: Connection, columns: Mapping[str, list[str]]) -> None:
    """Migration step: turn the DATETIME columns ``{table: [column, ...]}`` into epoch floats.

    Stored datetimes are UTC (naive on SQLite, ``timestamptz`` on PostgreSQL). SQLite keeps
    the column and rewrites its values (its typing is per value); PostgreSQL changes the
    column type in place.
    """
    existing = set(sa.inspect(conn).get_table_names())
    dialect = conn.dialect.name
    for table, names in columns.items():
        if table not in existing:
            continue
        for name in names:
            if dialect == "sqlite":
                _sqlite_datetimes_to_epoch(conn, table, name)
            elif dialect == "postgresql":
                conn.execute(
                    sa.text(
                        f'ALTER TABLE "{table}" ALTER COLUMN "{name}" TYPE double precision '
                        f'USING EXTRACT(EPOCH FROM "{name}")'
                    )
                )
            else:
                raise StateStoreError(
                    f"cannot migrate {table}.{name} on {dialect}: move the old store aside"
                )


def _sqlite_datetimes_to_epoch(conn: Connection, table: str, name: str) -> None:
    rows = conn.execute(
        sa.text(f'SELECT rowid, "{name}" FROM "{table}" WHERE typeof("{name}") = \'text\'')
    ).all()
    for rowid, text in rows:
        parsed = datetime.fromisoformat(text)
        at = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
        conn.execute(
            sa.text(f'UPDATE "{table}" SET "{name}" = :at WHERE rowid = :rowid'),
            {"at": at.timestamp(), "rowid": rowid},
        )

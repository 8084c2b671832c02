"""The registry's state store: one SQL database (SQLite under UPTAKE_HOME by default).

MLflow is the system of record for models and aliases, but it has no alias history, no
locks and no outbox; those live here. Every table is small. Engine setup, the timestamp
convention (UTC epoch seconds, ``EpochSeconds``) and schema versions come from ``uptake.db``.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from uptake import db as state_db
from uptake.db import EpochSeconds
from uptake.outbox import outbox_columns
from uptake.settings import Settings

metadata = sa.MetaData()

# One row per candidate version the promoter has decided on: its current state.
candidates = sa.Table(
    "candidates",
    metadata,
    sa.Column("model", sa.String(256), primary_key=True),
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("release_id", sa.String(512)),
    sa.Column("run_id", sa.String(64)),
    # pending_approval | promoting | promoted | rejected
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("updated_at", EpochSeconds, nullable=False),
)

# Every decision (the gate's on arrival, a person's approval or rejection), append-only.
decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # gate | approval
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("decided_by", sa.String(256), nullable=False),
    sa.Column("decided_at", EpochSeconds, nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # the Decision as JSON
    sa.UniqueConstraint("model", "version", "kind", name="uq_decision_once"),
)

# The audit trail of champion changes, append-only; ``seq`` numbers a model's changes.
history = sa.Table(
    "champion_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("previous_version", sa.String(64)),
    sa.Column("reason", sa.String(16), nullable=False),  # promotion | rollback
    sa.Column("decided_by", sa.String(256), nullable=False),
    sa.Column("decided_at", EpochSeconds, nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # the HistoryEntry as JSON (gate values)
    sa.UniqueConstraint("model", "seq", name="uq_history_seq"),
)

# Events to publish, written in the same transaction as the state they announce.
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    *outbox_columns(EpochSeconds),  # payload, status, attempts, last_error, published_at
    sa.Column("created_at", EpochSeconds, nullable=False),
)

# Per-model lease: compare-and-set on this row serialises promoters sharing the store;
# ``generation`` grows by one with every acquisition (the fencing token, locks.py).
leases = sa.Table(
    "model_leases",
    metadata,
    sa.Column("model", sa.String(256), primary_key=True),
    sa.Column("holder", sa.String(256)),
    sa.Column("expires_at", EpochSeconds, nullable=False, default=0.0),
    sa.Column("generation", sa.Integer, nullable=False, default=0, server_default="0"),
)

# MLflow webhook delivery ids already accepted (replay protection).
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("delivery_id", sa.String(128), primary_key=True),
    sa.Column("received_at", EpochSeconds, nullable=False),
)

# Alert deliveries: a durable queue per channel, with retries and de-duplication.
alert_deliveries = sa.Table(
    "alert_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("channel", sa.String(128), nullable=False),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("dedup_key", sa.String(512), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),  # trigger | resolve
    sa.Column("alert", sa.Text, nullable=False),  # the Alert as JSON
    # pending | sent | failed | suppressed
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", EpochSeconds, nullable=False),
    sa.Column("created_at", EpochSeconds, nullable=False),
    sa.Column("sent_at", EpochSeconds),
    sa.Column("last_error", sa.Text),
    sa.UniqueConstraint("channel", "event_id", "dedup_key", "action", name="uq_alert_event"),
)

# Conditions that were triggered and not yet resolved (so a resolve goes only where needed).
alert_incidents = sa.Table(
    "alert_incidents",
    metadata,
    sa.Column("dedup_key", sa.String(512), primary_key=True),
    sa.Column("opened_at", EpochSeconds, nullable=False),
    sa.Column("resolved_at", EpochSeconds),
)


# 0: before uptake.db (outbox without status, attempts, last_error); 1: leases without
# a generation
SCHEMA_VERSION = 2


def now() -> float:
    return state_db.now()


def default_state_url(settings: Settings) -> str:
    return f"sqlite:///{settings.state_dir / 'registry' / 'registry.db'}"


def _outbox_status(conn: Connection) -> None:
    """Version 0 -> 1: the outbox gets the shared outbox's columns (``uptake.outbox``)."""
    if "outbox" not in sa.inspect(conn).get_table_names():
        return
    for statement in (
        "ALTER TABLE outbox RENAME COLUMN event TO payload",
        "ALTER TABLE outbox ADD COLUMN status VARCHAR(16) NOT NULL DEFAULT 'pending'",
        "ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE outbox ADD COLUMN last_error TEXT",
        "UPDATE outbox SET status = 'published' WHERE published_at IS NOT NULL",
    ):
        conn.execute(sa.text(statement))


def _lease_generation(conn: Connection) -> None:
    """Version 1 -> 2: the lease row gets its fencing token."""
    if "model_leases" not in sa.inspect(conn).get_table_names():
        return
    conn.execute(
        sa.text("ALTER TABLE model_leases ADD COLUMN generation INTEGER NOT NULL DEFAULT 0")
    )


def make_engine(settings: Settings) -> Engine:
    """Engine for ``registry.state_url`` (default SQLite under the state dir); tables ready."""
    engine = state_db.make_engine(settings.registry.state_url or default_state_url(settings))
    try:
        state_db.open_schema(
            engine,
            metadata,
            store="registry",
            version=SCHEMA_VERSION,
            migrations={1: _outbox_status, 2: _lease_generation},
        )
    except BaseException:
        engine.dispose()
        raise
    return engine

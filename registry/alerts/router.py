"""Routing (severity and kind per channel) and de-duplication into the delivery queue.

De-duplication works on conditions, not messages: a trigger whose dedup key is already open
(triggered within ``dedup_window_s`` and not resolved) is suppressed, so a redelivered event
or a condition reported every minute pages once. A resolve goes out only for an open
condition, to the channels its trigger went to. The queue rows are written before the
consumer commits, so an alert is never lost between the bus and the channel. Kinds listed
in ``alerts.grouping`` (dead letters by default) join a group instead (grouping.py), and the
group's notifications are queued here when due.
"""

from __future__ import annotations

import logging
from typing import cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from registry import db
from registry.alerts import grouping
from registry.alerts.model import Alert
from uptake.registry_config import SEVERITY_ORDER, AlertKind, AlertSettings

log = logging.getLogger(__name__)


def routes(alert: Alert, cfg: AlertSettings) -> list[str]:
    """Channels that take this alert: severity at least theirs, and a kind they want."""
    out = []
    for name, channel in cfg.channels.items():
        if SEVERITY_ORDER[alert.severity] < SEVERITY_ORDER[channel.min_severity]:
            continue
        if channel.kinds is not None and alert.kind not in channel.kinds:
            continue
        out.append(name)
    return out


def _open_incident(conn: Connection, key: str, window_s: float) -> bool:
    """Open (or re-open) ``key``; False when it is already open within the window."""
    t = db.alert_incidents
    at = db.now()
    row = conn.execute(sa.select(t).where(t.c.dedup_key == key)).first()
    if row is None:
        conn.execute(sa.insert(t).values(dedup_key=key, opened_at=at, resolved_at=None))
        return True
    if row.resolved_at is None and row.opened_at >= at - window_s:
        return False
    conn.execute(sa.update(t).where(t.c.dedup_key == key).values(opened_at=at, resolved_at=None))
    return True


def _close_incident(conn: Connection, key: str) -> bool:
    t = db.alert_incidents
    return bool(
        conn.execute(
            sa.update(t)
            .where(t.c.dedup_key == key, t.c.resolved_at.is_(None))
            .values(resolved_at=db.now())
        ).rowcount
    )


def _queue(conn: Connection, alert: Alert, channels: list[str]) -> None:
    for channel in channels:
        conn.execute(
            sa.insert(db.alert_deliveries).values(
                channel=channel,
                event_id=alert.event_id,
                dedup_key=alert.dedup_key,
                action=alert.action,
                alert=alert.model_dump_json(),
                status="pending",
                attempts=0,
                next_attempt_at=db.now(),
                created_at=db.now(),
            )
        )


def flush_groups(engine: Engine, cfg: AlertSettings) -> int:
    """Queue the notifications that alert groups are due; return how many."""
    return grouping.flush(engine, cfg, _queue, routes)


def enqueue(engine: Engine, alert: Alert, cfg: AlertSettings) -> int:
    """Queue ``alert`` for its channels; return how many deliveries were queued."""
    t = db.alert_deliveries
    rule = cfg.grouping.get(cast(AlertKind, alert.kind))  # an unknown kind finds no rule
    if rule is not None and alert.action == "trigger":
        if not routes(alert, cfg):
            return 0
        with engine.begin() as conn:
            grouping.add(conn, alert, rule, db.now())
        # the flusher thread sends what falls due; with no wait, the first goes out at once
        return flush_groups(engine, cfg) if rule.group_wait_s == 0 else 0
    with engine.begin() as conn:
        if alert.action == "trigger":
            channels = routes(alert, cfg)
            if not channels:
                return 0
            fresh = _open_incident(conn, alert.dedup_key, cfg.dedup_window_s)
        else:
            fresh = _close_incident(conn, alert.dedup_key)
            triggered = conn.execute(
                sa.select(t.c.channel)
                .where(t.c.dedup_key == alert.dedup_key, t.c.action == "trigger")
                .distinct()
            ).scalars()
            channels = [c for c in triggered if c in cfg.channels]
        if not fresh or not channels:
            log.info("alert %s %s suppressed (duplicate)", alert.action, alert.dedup_key)
            return 0
        _queue(conn, alert, channels)
    return len(channels)

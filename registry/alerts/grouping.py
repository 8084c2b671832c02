"""Alert groups, the way Alertmanager groups: a storm of alerts becomes one incident.

Without it, each dead letter is its own incident (``uptake/dead_letter/<topic>[p]@offset``),
so 1,000 bad messages page on-call 1,000 times. A kind listed in ``alerts.grouping`` is not
queued alert by alert: each alert joins the group of its kind and ``group_by`` details (by
default consumer group, topic and error kind), counted once per dedup key (a redelivered
event adds nothing). ``flush`` then sends one notification per group under the group's key:

- the first ``group_wait_s`` after the group opened (the burst so far, with its count);
- an update when the count grew, at most every ``group_interval_s``;
- a repeat of an unchanged open group every ``repeat_interval_s``;
- a resolve once ``resolve_after_s`` passed without a new alert (after a last update with
  the final count, when alerts came in since the last notification).

PagerDuty folds the repeated triggers of one dedup key into one incident; Slack and the
webhook get a handful of messages, each with the count and the latest examples. Groups live
in the state store (tables below), so a restarted alerter carries on where it stopped.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from registry import db
from registry.alerts.model import Alert
from uptake.registry_config import AlertGrouping, AlertSettings

log = logging.getLogger(__name__)

# One row per group: open (resolved_at NULL) or resolved; re-opened by the next alert.
alert_groups = sa.Table(
    "alert_groups",
    db.metadata,
    sa.Column("group_key", sa.String(512), primary_key=True),  # the incident's dedup key
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("count", sa.Integer, nullable=False),  # alerts since the group opened
    sa.Column("notified_count", sa.Integer, nullable=False),  # count at the last notification
    sa.Column("opened_at", sa.Float, nullable=False),
    sa.Column("last_at", sa.Float, nullable=False),  # newest alert
    sa.Column("notified_at", sa.Float),  # last notification; NULL: none yet
    sa.Column("resolved_at", sa.Float),
    sa.Column("alert", sa.Text, nullable=False),  # the newest Alert as JSON (severity, source)
    sa.Column("examples", sa.Text, nullable=False),  # JSON list: the newest summaries
)

# The members of open groups: each dedup key counts once (redelivered events do not).
alert_group_members = sa.Table(
    "alert_group_members",
    db.metadata,
    sa.Column("group_key", sa.String(512), primary_key=True),
    sa.Column("member_key", sa.String(512), primary_key=True),
)

_flush_lock = threading.Lock()  # one flush at a time in this process: no double notification


def group_key(alert: Alert, rule: AlertGrouping) -> str:
    parts = [alert.details.get(label, "") or "-" for label in rule.group_by]
    return "/".join(["uptake", alert.kind, *parts])


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def add(conn: Connection, alert: Alert, rule: AlertGrouping, at: float) -> bool:
    """Count ``alert`` into its group (opening it when needed); False for a repeat member."""
    key = group_key(alert, rule)
    g, m = alert_groups, alert_group_members
    row = conn.execute(sa.select(g).where(g.c.group_key == key).with_for_update()).first()
    if row is not None and row.resolved_at is not None:  # quiet long enough: a new incident
        conn.execute(sa.delete(m).where(m.c.group_key == key))
        conn.execute(sa.delete(g).where(g.c.group_key == key))
        row = None
    known = conn.execute(
        sa.select(m.c.member_key).where(m.c.group_key == key, m.c.member_key == alert.dedup_key)
    ).first()
    if known is not None:
        return False
    conn.execute(sa.insert(m).values(group_key=key, member_key=alert.dedup_key))
    example = alert.summary[:300]
    if row is None:
        conn.execute(
            sa.insert(g).values(
                group_key=key,
                kind=alert.kind,
                count=1,
                notified_count=0,
                opened_at=at,
                last_at=at,
                notified_at=None,
                resolved_at=None,
                alert=alert.model_dump_json(),
                examples=json.dumps([example]),
            )
        )
        return True
    examples = [example, *json.loads(row.examples)][: rule.max_examples]
    conn.execute(
        sa.update(g)
        .where(g.c.group_key == key)
        .values(
            count=row._mapping["count"] + 1,  # ``row.count`` is the tuple method
            last_at=at,
            alert=alert.model_dump_json(),
            examples=json.dumps(examples),
        )
    )
    return True


def notification(row: sa.Row, rule: AlertGrouping, at: float, action: str = "trigger") -> Alert:
    """The alert that speaks for the whole group: its count and its latest examples."""
    latest = Alert.model_validate_json(row.alert)
    examples: list[str] = json.loads(row.examples)
    labels = {label: latest.details.get(label, "") for label in rule.group_by}
    what = latest.kind.replace("_", " ")
    where = ", ".join(f"{k} {v}" for k, v in labels.items() if v)
    if action == "resolve":
        summary = f"{what} ({where}): quiet for {rule.resolve_after_s:g} s after {row.count}"
    else:
        summary = f"{row.count} × {what} ({where}); latest: {examples[0]}"
    details = {
        **labels,
        "count": str(row.count),
        "new_since_last_notice": str(row.count - row.notified_count),
        "first_seen": _iso(row.opened_at),
        "last_seen": _iso(row.last_at),
        "latest": "\n".join(examples),
    }
    return Alert(
        kind=latest.kind,
        severity=latest.severity,
        action=action,
        dedup_key=row.group_key,
        summary=summary,
        source=latest.source,
        details=details,
        links=latest.links,
        event_id=uuid.uuid4().hex,  # each notification is its own delivery
        event_type="alert.group",
        occurred_at=datetime.fromtimestamp(at, UTC),
    )


def _due(row: sa.Row, rule: AlertGrouping, at: float) -> str | None:
    """What the group needs now: "resolve", "trigger" (first, update or repeat) or nothing."""
    if at >= row.last_at + rule.resolve_after_s:
        return "resolve"
    if row.notified_at is None:
        return "trigger" if at >= row.opened_at + rule.group_wait_s else None
    if row.count > row.notified_count and at >= row.notified_at + rule.group_interval_s:
        return "trigger"
    if at >= row.notified_at + rule.repeat_interval_s:
        return "trigger"
    return None


def flush(
    engine: Engine,
    cfg: AlertSettings,
    queue: Callable[[Connection, Alert, list[str]], None],
    routes: Callable[[Alert, AlertSettings], list[str]],
) -> int:
    """Send what every open group is due; return how many notifications were queued.

    ``queue`` inserts the delivery rows of one alert for the given channels; ``routes`` picks
    the channels of a trigger (a resolve goes where the group's triggers went).
    """
    g = alert_groups
    sent = 0
    with _flush_lock, engine.begin() as conn:
        at = db.now()
        for row in conn.execute(sa.select(g).where(g.c.resolved_at.is_(None))).all():
            rule = cfg.grouping.get(row.kind)
            if rule is None:  # grouping turned off since: resolve quietly
                conn.execute(
                    sa.update(g).where(g.c.group_key == row.group_key).values(resolved_at=at)
                )
                continue
            action = _due(row, rule, at)
            if action is None:
                continue
            alert = notification(row, rule, at, action)
            if action == "resolve":
                if row.notified_at is not None and row.count > row.notified_count:
                    queue(conn, notification(row, rule, at), routes(alert, cfg))  # final count
                    sent += 1
                channels = _triggered_channels(conn, row.group_key, cfg)
                conn.execute(
                    sa.update(g).where(g.c.group_key == row.group_key).values(resolved_at=at)
                )
                conn.execute(
                    sa.delete(alert_group_members).where(
                        alert_group_members.c.group_key == row.group_key
                    )
                )
            else:
                channels = routes(alert, cfg)
                conn.execute(
                    sa.update(g)
                    .where(g.c.group_key == row.group_key)
                    .values(notified_at=at, notified_count=row.count)
                )
            if channels and (action == "trigger" or row.notified_at is not None):
                queue(conn, alert, channels)
                sent += 1
                log.info("alert group %s: %s sent (%d alert(s))", row.group_key, action, row.count)
    return sent


def _triggered_channels(conn: Connection, key: str, cfg: AlertSettings) -> list[str]:
    t = db.alert_deliveries
    rows = conn.execute(
        sa.select(t.c.channel).where(t.c.dedup_key == key, t.c.action == "trigger").distinct()
    ).scalars()
    return [c for c in rows if c in cfg.channels]


class GroupFlusher:
    """A thread that flushes due groups every ``poll_s`` and wakes the dispatchers."""

    def __init__(
        self,
        engine: Engine,
        cfg: AlertSettings,
        flush_once: Callable[[], int],
        wake: Callable[[], None],
        poll_s: float = 1.0,
    ) -> None:
        self.engine = engine
        self.cfg = cfg
        self.flush_once = flush_once
        self.wake = wake
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alerts-groups", daemon=True)

    def start(self) -> GroupFlusher:
        if self.cfg.grouping:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                if self.flush_once():
                    self.wake()
            except Exception:
                log.exception("alert groups: flush failed (retried in %.1f s)", self.poll_s)

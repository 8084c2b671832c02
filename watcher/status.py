"""The watcher's section of ``uptake status``: recent releases and skips, source health."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from uptake.settings import Settings
from uptake.status import StatusSection
from watcher.store import Store, default_store_url


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _short(revision: str) -> str:
    return revision[:12]


def watcher_status(settings: Settings) -> StatusSection:
    """Read the watcher's store (never creating it) and list what it decided lately."""
    section = StatusSection(
        name="watcher",
        title="watcher: recent releases and skips",
        columns=["when", "source", "repo", "revision", "status", "reason"],
    )
    url = sa.engine.make_url(default_store_url(settings))
    if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).exists()):
        section.data = {"releases": [], "skips": [], "sources": []}
        section.title += " (no watcher state yet)"
        return section
    store = Store(str(url), create=False)
    try:
        limit = settings.watcher.status_limit
        releases = store.release_rows(limit)
        skips = store.skip_rows(limit)
        sources = store.sources()
    finally:
        store.close()
    rows = [
        (r["detected_at"], [r["source"], r["repo_id"], _short(r["revision"]), r["status"], ""])
        for r in releases
    ] + [
        (
            s["updated_at"],
            [
                s["source"],
                s["repo_id"],
                _short(s["revision"]),
                "skipped" if s["outcome"] == "skipped" else "not yet",
                f"{s['reason']}: {s['detail']}" if s["detail"] else s["reason"],
            ],
        )
        for s in skips
    ]
    rows.sort(key=lambda r: r[0], reverse=True)
    section.rows = [[_when(when), *rest] for when, rest in rows[:limit]]
    section.data = {
        "releases": [{k: _json(v) for k, v in r.items()} for r in releases],
        "skips": [{k: _json(v) for k, v in s.items()} for s in skips],
        "sources": [
            {
                "name": s.name,
                "initialized_at": _json(s.initialized_at),
                "consecutive_failures": s.consecutive_failures,
                "last_success_at": _json(s.last_success_at),
                "last_error": s.last_error,
                "alert_firing": s.alert_firing,
            }
            for s in sources
        ],
    }
    failing = [s for s in sources if s.consecutive_failures]
    if failing:
        section.title += " — failing: " + ", ".join(
            f"{s.name} ({s.consecutive_failures}x)" for s in failing
        )
    return section


def _json(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value

"""Where a running watcher can be reached, for ``uptake up``'s health check and ``status``.

The service writes ``<state dir>/watcher.json`` (its pid and URL) once it serves HTTP, and
removes it on exit; the probe trusts the file only for the pid it is asked about.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import httpx

from uptake.settings import Settings


def health_file(settings: Settings) -> Path:
    return settings.state_dir / "watcher.json"


def write_health_file(settings: Settings, url: str) -> None:
    path = health_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "url": url}))
    tmp.replace(path)


def remove_health_file(settings: Settings) -> None:
    path = health_file(settings)
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def stack_probe(settings: Settings, pid: int | None) -> str | None:
    """The watcher's URL once the process ``pid`` answers ``/healthz``; else None."""
    try:
        info = json.loads(health_file(settings).read_text())
    except (OSError, ValueError):
        return None
    if pid is not None and info.get("pid") != pid:
        return None
    url = str(info.get("url", ""))
    try:
        ok = httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return None
    return url if ok else None

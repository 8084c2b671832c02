"""Where a running ``uptake serve`` can be reached, for ``uptake up`` and ``uptake status``.

The service writes ``<state dir>/serving.json`` (pid, URL, models) once its API answers and
removes it on exit; the probe trusts the file only for the pid it is asked about.
"""

from __future__ import annotations

import json

import httpx

from serving.service import health_file
from uptake.settings import Settings


def stack_probe(settings: Settings, pid: int | None) -> str | None:
    """The serving URL once the process ``pid`` answers ``/healthz``; else None."""
    try:
        info = json.loads(health_file(settings).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or (pid is not None and info.get("pid") != pid):
        return None
    url = str(info.get("url", ""))
    try:
        ok = httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return None
    return f"{url}/v1" if ok else None

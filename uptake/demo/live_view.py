"""The live view: one row per demo release, its stage as the bus reports it."""

from __future__ import annotations

import time

from rich.console import Group
from rich.table import Table
from rich.text import Text

from uptake.demo.follow import BusState
from uptake.demo.releases import DemoRelease
from uptake.mlflow_contract import WORKER_STAGES

STYLE = {
    "waiting": "dim",
    "released": "cyan",
    "detected": "cyan",
    "running": "yellow",
    "registered": "yellow",
    "promoted": "green",
    "serving": "bold green",
    "rejected": "magenta",
    "pending approval": "magenta",
    "failed": "bold red",
}


class Row:
    """What the demo itself knows about a release, beside what the bus says."""

    def __init__(self, release: DemoRelease, repo_id: str) -> None:
        self.release = release
        self.repo_id = repo_id
        self.released_at: float | None = None
        self.serving = False
        self.note: str | None = None


def _stage_cell(stage: str | None, step: int | None, total: int | None) -> str:
    if stage is None:
        return "—"
    idx = WORKER_STAGES.index(stage) + 1 if stage in WORKER_STAGES else 0
    cell = f"{idx}/{len(WORKER_STAGES)} {stage}"
    if step is not None and total:
        cell += f" {step}/{total}"
    return cell


def render(rows: list[Row], state: BusState, started: float, banner: str) -> Group:
    table = Table(title="uptake demo", caption=banner, expand=False)
    for col in ("release", "model", "status", "stage", "version", "elapsed", "note"):
        table.add_column(col)
    now = time.monotonic()
    for row in rows:
        p = state.by_repo(row.repo_id)
        if row.released_at is None:
            status = "waiting"
        elif row.serving:
            status = "serving"
        elif p is None:
            status = "released"
        else:
            status = p.status
        elapsed = f"{now - row.released_at:.0f} s" if row.released_at is not None else ""
        note = row.note or (p.reason if p is not None and p.reason else "")
        table.add_row(
            row.repo_id,
            row.release.description,
            Text(status, style=STYLE.get(status, "")),
            _stage_cell(p.stage, p.step, p.total_steps) if p else "—",
            f"v{p.version}" if p and p.version else "—",
            elapsed,
            Text(note[:80]),
        )
    champion = f"champion: v{state.champion}" if state.champion else "champion: none yet"
    footer = Text(f"{champion}   events seen: {state.events}   {now - started:.0f} s", style="dim")
    return Group(table, footer)

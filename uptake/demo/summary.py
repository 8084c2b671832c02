"""The demo's final word: the adoption table, per-area gains and where to look next.

Rendered twice from the same rows: a rich table for the terminal and Markdown for the state
dir (``demo-summary.md``, the table the README quotes).
"""

from __future__ import annotations

from rich.table import Table

from uptake.adoption_table import ADOPTION_COLUMNS
from uptake.demo.results import Adoption
from uptake.formatting import MISSING, percent, rate_change


def _serving(a: Adoption, champion: str | None) -> str:
    latency = a.release_to_serving_s
    if latency is not None:
        note = "" if a.version == champion else ", replaced later"
        return f"{latency:.0f} s (v{a.version}{note})"
    if a.decision == "promoted":
        return "promoted, not served yet"
    return "not served"


def rows(adoptions: list[Adoption], champion: str | None) -> list[tuple[str, ...]]:
    return [
        (
            f"{a.repo_id} (v{a.version})",
            percent(a.base_all_pass),
            percent(a.base_criterion),
            percent(a.post_all_pass),
            percent(a.post_criterion),
            a.decision or "undecided",
            _serving(a, champion),
        )
        for a in adoptions
    ]


def adoption_table(adoptions: list[Adoption], champion: str | None) -> Table:
    table = Table(title="uptake demo: what was adopted")
    for col in ADOPTION_COLUMNS:
        table.add_column(col, justify="left" if col in ("release", "decision") else "right")
    for row in rows(adoptions, champion):
        table.add_row(*row)
    table.caption = f"champion: v{champion}" if champion else "no champion"
    return table


def areas(adoptions: list[Adoption]) -> list[str]:
    return sorted({area for a in adoptions for area in a.areas})


def area_table(adoptions: list[Adoption]) -> Table:
    table = Table(title="all-pass rate per practice area: base → post-trained")
    table.add_column("practice area")
    for a in adoptions:
        table.add_column(f"{a.repo_id} (v{a.version})", justify="right")
    for area in areas(adoptions):
        cells = []
        for a in adoptions:
            r = a.areas.get(area)
            cells.append(rate_change(r.base_all_pass, r.post_all_pass) if r else MISSING)
        table.add_row(area, *cells)
    return table


def markdown(adoptions: list[Adoption], champion: str | None) -> str:
    lines = [
        "| " + " | ".join(ADOPTION_COLUMNS) + " |",
        "| " + " | ".join("---" for _ in ADOPTION_COLUMNS) + " |",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows(adoptions, champion)]
    lines += ["", "| practice area | " + " | ".join(f"{a.repo_id}" for a in adoptions) + " |"]
    lines.append("| --- |" + " --- |" * len(adoptions))
    for area in areas(adoptions):
        cells = []
        for a in adoptions:
            r = a.areas.get(area)
            cells.append(rate_change(r.base_all_pass, r.post_all_pass) if r else MISSING)
        lines.append(f"| {area} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

"""The demo's final word: the adoption table, per-area gains and where to look next.

Rendered twice from the same rows: a rich table for the terminal and Markdown for the state
dir (``demo-summary.md``, the table the README quotes).
"""

from __future__ import annotations

from rich.table import Table

from uptake.demo.results import Adoption

COLUMNS = (
    "release",
    "base all-pass",
    "base criterion",
    "post-trained all-pass",
    "post-trained criterion",
    "decision",
    "release → serving",
)


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def gain(base: float | None, post: float | None) -> str:
    if base is None or post is None:
        return "—"
    return f"{base:.0%} → {post:.0%} ({(post - base) * 100:+.0f} pt)"


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
            pct(a.base_all_pass),
            pct(a.base_criterion),
            pct(a.post_all_pass),
            pct(a.post_criterion),
            a.decision or "undecided",
            _serving(a, champion),
        )
        for a in adoptions
    ]


def adoption_table(adoptions: list[Adoption], champion: str | None) -> Table:
    table = Table(title="uptake demo: what was adopted")
    for col in COLUMNS:
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
            cells.append(gain(r.base_all_pass, r.post_all_pass) if r else "—")
        table.add_row(area, *cells)
    return table


def markdown(adoptions: list[Adoption], champion: str | None) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "| " + " | ".join("---" for _ in COLUMNS) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows(adoptions, champion)]
    lines += ["", "| practice area | " + " | ".join(f"{a.repo_id}" for a in adoptions) + " |"]
    lines.append("| --- |" + " --- |" * len(adoptions))
    for area in areas(adoptions):
        cells = []
        for a in adoptions:
            r = a.areas.get(area)
            cells.append(gain(r.base_all_pass, r.post_all_pass) if r else "—")
        lines.append(f"| {area} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

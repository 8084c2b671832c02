"""Render a ``VersionReport`` as one self-contained HTML page and as its Markdown twin.

The HTML embeds its plots as base64 PNG data URIs and its styles inline: the file can be
mailed, attached to a ticket or opened offline, and it loads nothing from anywhere. The
Markdown twin links the same PNG files written next to it. Every text that came from MLflow is
escaped (HTML) or has its pipes and line breaks neutralised (Markdown table cells).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import NamedTuple

from registry.report.model import Row, TimelinePoint, VersionReport
from registry.report.plots import AREA_PLOT, COST_PLOT, SCORE_PLOT
from uptake.adoption_table import ADOPTION_COLUMNS
from uptake.formatting import MISSING, percent, points, short_release_id

TABLE_HEADER = ("version", *ADOPTION_COLUMNS)
_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1100px;
color:#1f2328;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left;vertical-align:top}
td.id,td.num{white-space:nowrap}td.name{overflow-wrap:anywhere}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}
.meta{color:#57606a;font-size:.85rem;overflow-wrap:anywhere}img{max-width:100%;height:auto}
td[title]{cursor:help}
.note{color:#9a6700}
"""


def duration(seconds: float | None) -> str:
    """``2m 05s``, ``1h 03m``; ``MISSING`` when unknown."""
    if seconds is None:
        return MISSING
    sign, s = ("-", -seconds) if seconds < 0 else ("", seconds)
    if s < 60:
        return f"{sign}{s:.1f}s"
    minutes, sec = divmod(round(s), 60)
    if minutes < 60:
        return f"{sign}{minutes}m {sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{sign}{hours}h {minutes:02d}m"


def when(at: datetime | None) -> str:
    return MISSING if at is None else at.strftime("%Y-%m-%d %H:%M:%S UTC")


def number(value: float | None, fmt: str = ".4g") -> str:
    return MISSING if value is None else format(value, fmt)


def row_cells(row: Row) -> list[str]:
    return [
        f"v{row.version}",
        row.release,
        percent(row.base_all_pass),
        percent(row.base_criterion),
        percent(row.post_all_pass),
        percent(row.post_criterion),
        row.decision or MISSING,
        duration(row.release_to_serving_s),
    ]


class Cell(NamedTuple):
    """An HTML table cell shown shortened, the full text on hover (``title``)."""

    text: str
    title: str


def html_row_cells(row: Row) -> list[str | Cell]:
    """``row_cells`` for HTML: the release id shortened (the full id on hover), so the table
    fits the page."""
    cells: list[str | Cell] = list(row_cells(row))
    cells[1] = Cell(short_release_id(row.release), row.release)
    return cells


def timeline_cells(steps: Sequence[TimelinePoint]) -> list[list[str]]:
    """step | started | ended | took | since release created."""
    origin = next((p.at for p in steps if p.at is not None), None)
    out = []
    for p in steps:
        took = (p.ended - p.at).total_seconds() if p.at and p.ended else None
        since = (p.at - origin).total_seconds() if p.at and origin else None
        out.append([p.label, when(p.at), when(p.ended), duration(took), duration(since)])
    return out


def _checks(report: VersionReport) -> list[list[str]]:
    return [
        [
            c.name,
            "pass" if c.passed else "fail",
            number(c.value),
            number(c.threshold),
            c.detail or MISSING,
        ]
        for c in report.checks
    ]


def _paired(report: VersionReport) -> list[list[str]]:
    p = report.paired
    return [
        [
            "all-pass rate difference",
            points(p.all_pass_diff),
            f"[{points(p.all_pass_low)}, {points(p.all_pass_high)}]",
        ],
        [
            "criterion pass rate difference",
            points(p.criterion_diff),
            f"[{points(p.criterion_low)}, {points(p.criterion_high)}]",
        ],
        ["McNemar exact p (all-pass)", number(p.mcnemar_p), MISSING],
    ]


def _areas(report: VersionReport) -> list[list[str]]:
    return [
        [
            a.area,
            percent(a.base),
            f"[{percent(a.base_low)}, {percent(a.base_high)}]",
            percent(a.post),
            f"[{percent(a.post_low)}, {percent(a.post_high)}]",
        ]
        for a in report.areas
    ]


def _costs(report: VersionReport) -> list[list[str]]:
    rows = []
    for p in sorted(
        report.cost_points, key=lambda p: (p.cost_per_task is None, p.cost_per_task or 0.0)
    ):
        rows.append(
            [
                p.label + (" (this version)" if p.this_version else ""),
                p.kind,
                percent(p.all_pass),
                percent(p.criterion),
                number(p.cost_per_task, ".4g"),
                number(p.tokens_in_per_task, ".1f"),
                number(p.tokens_out_per_task, ".1f"),
                number(p.seconds_per_task, ".3g"),
            ]
        )
    return rows


COST_HEADER = (
    "model",
    "kind",
    "all-pass",
    "criterion",
    "cost per task",
    "tokens in / task",
    "tokens out / task",
    "gen. s / task",
)
SECTIONS = (
    ("Per-task score distribution", SCORE_PLOT, "score distribution, base vs post-trained"),
    ("Per practice area", AREA_PLOT, "all-pass rate per practice area with 95% intervals"),
    ("Quality against cost", COST_PLOT, "quality–cost chart"),
)


# -- HTML ------------------------------------------------------------------------------------


def _h(text: str) -> str:
    return html.escape(text, quote=True)


def _html_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str | Cell]],
    table_id: str,
    names: Collection[int] = (),
) -> str:
    """``names``: the columns that hold model names, which may break anywhere so that one
    long name never makes the table wider than the page. A ``Cell`` (a shortened id) never
    breaks: it is short, and its full text is on hover."""
    head = "".join(f"<th>{_h(c)}</th>" for c in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            if isinstance(cell, Cell):
                cells.append(f'<td class="id" title="{_h(cell.title)}">{_h(cell.text)}</td>')
                continue
            cls = {"pass": ' class="pass"', "fail": ' class="fail"'}.get(cell, "")
            if not cls and cell[:1] in "+-0123456789[" and cell != MISSING:
                cls = ' class="num"'
            elif not cls and i in names:
                cls = ' class="name"'
            cells.append(f"<td{cls}>{_h(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    rows_html = "".join(body)
    return (
        f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{rows_html}</tbody></table>'
    )


def _img(png: bytes, alt: str, name: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    src = f"data:image/png;base64,{data}"
    return f'<img class="plot" data-plot="{_h(name)}" alt="{_h(alt)}" src="{src}">'


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_h(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>\n"
    )


def _plot_section(title: str, name: str, alt: str, images: dict[str, bytes], html_out: bool) -> str:
    if name in images:
        return _img(images[name], alt, name) if html_out else f"![{alt}]({name})"
    missing = f"({alt}: no data logged for it — see the notes)"
    return f'<p class="note">{_h(missing)}</p>' if html_out else f"_{missing}_"


AGENT_HEADER = (
    "task",
    "score",
    "turns",
    "tool calls",
    "documents read",
    "deliverables",
    "tokens in/out",
    "wall",
    "stop",
)


def _agent_cells(report: VersionReport) -> list[list[str]]:
    return [
        [
            a.task_id,
            percent(a.score),
            str(a.turns),
            str(a.tool_calls),
            f"{a.documents_read}/{a.documents_present}",
            f"{a.deliverables}/{a.deliverables_expected}",
            f"{a.tokens_in}/{a.tokens_out}",
            duration(a.wall_seconds),
            a.stop_reason,
        ]
        for a in report.agent_tasks
    ]


def _agent_html(report: VersionReport) -> str:
    rows = []
    for cells, task in zip(_agent_cells(report), report.agent_tasks, strict=True):
        link = f'<a href="{_h(task.transcript)}">transcript</a>' if task.transcript else _h(MISSING)
        rows.append("<tr>" + "".join(f"<td>{_h(c)}</td>" for c in cells) + f"<td>{link}</td></tr>")
    head = "".join(f"<th>{_h(h)}</th>" for h in (*AGENT_HEADER, "transcript"))
    return f'<table class="agent"><tr>{head}</tr>' + "".join(rows) + "</table>"


def _agent_md(report: VersionReport) -> str:
    rows = [
        [*cells, f"[transcript]({task.transcript})" if task.transcript else MISSING]
        for cells, task in zip(_agent_cells(report), report.agent_tasks, strict=True)
    ]
    lines = ["| " + " | ".join((*AGENT_HEADER, "transcript")) + " |"]
    lines.append("|" + "---|" * (len(AGENT_HEADER) + 1))
    # links keep their brackets; every other cell is neutralised like any table cell
    lines += [
        "| " + " | ".join([*map(_cell, r[:-1]), r[-1].replace("|", "%7C")]) + " |" for r in rows
    ]
    return "\n".join(lines)


def render_html(report: VersionReport, images: dict[str, bytes]) -> str:
    r = report
    title = f"{r.registered_model} v{r.version} — adoption report"
    parts = [
        f"<h1>{_h(title)}</h1>",
        f'<p class="meta">release {_h(r.release_id)} · base model {_h(r.base_model or MISSING)} · '
        f"suite {_h((r.suite_sha or MISSING)[:12])} · MLflow run {_h(r.run_id)}</p>",
        "<h2>Adoption</h2>",
        _html_table(TABLE_HEADER, [html_row_cells(r.row)], "adoption"),
    ]
    title_s, name, alt = SECTIONS[0]
    parts += [f"<h2>{_h(title_s)}</h2>", _plot_section(title_s, name, alt, images, True)]
    title_s, name, alt = SECTIONS[1]
    parts += [
        f"<h2>{_h(title_s)}</h2>",
        _plot_section(title_s, name, alt, images, True),
        _html_table(
            (
                "practice area",
                "base all-pass",
                "base 95% CI",
                "post-trained all-pass",
                "post-trained 95% CI",
            ),
            _areas(r),
            "areas",
        ),
        "<h2>Promotion gate</h2>",
        f"<p>decision: <strong>{_h(r.row.decision or MISSING)}</strong> — "
        f"{_h(r.decision_reason or MISSING)}</p>",
        _html_table(("check", "result", "value", "threshold", "detail"), _checks(r), "checks")
        if r.checks
        else '<p class="note">no gate decision recorded for this version yet</p>',
        "<h2>Paired test (post-trained minus base, same tasks)</h2>",
        _html_table(("measure", "value", "95% CI"), _paired(r), "paired"),
        "<h2>Timeline</h2>",
        _html_table(
            ("step", "started", "ended", "took", "since release created"),
            timeline_cells(r.timeline),
            "timeline",
        ),
    ]
    title_s, name, alt = SECTIONS[2]
    parts += [
        f"<h2>{_h(title_s)}</h2>",
        _plot_section(title_s, name, alt, images, True),
        _html_table(COST_HEADER, _costs(r), "costs", names=(0,)),
    ]
    if r.agent_tasks:
        parts += ["<h2>Agent (post-trained model, per task)</h2>", _agent_html(r)]
    if r.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_h(n)}</li>" for n in r.notes) + "</ul>")
    return _page(title, "\n".join(parts))


# -- Markdown ---------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(report: VersionReport, images: dict[str, bytes]) -> str:
    r = report
    out = [
        f"# {r.registered_model} v{r.version} — adoption report",
        "",
        f"release `{r.release_id}` · base model `{r.base_model or MISSING}` · suite "
        f"`{(r.suite_sha or MISSING)[:12]}` · MLflow run `{r.run_id}`",
        "",
        "## Adoption",
        "",
        md_table(TABLE_HEADER, [row_cells(r.row)]),
    ]
    for i, (title, name, alt) in enumerate(SECTIONS[:2]):
        out += ["", f"## {title}", "", _plot_section(title, name, alt, images, False)]
        if i == 1:
            out += [
                "",
                md_table(
                    (
                        "practice area",
                        "base all-pass",
                        "base 95% CI",
                        "post-trained all-pass",
                        "post-trained 95% CI",
                    ),
                    _areas(r),
                ),
            ]
    out += [
        "",
        "## Promotion gate",
        "",
        f"decision: **{r.row.decision or MISSING}** — {_cell(r.decision_reason or MISSING)}",
        "",
    ]
    out.append(
        md_table(("check", "result", "value", "threshold", "detail"), _checks(r))
        if r.checks
        else "_no gate decision recorded for this version yet_"
    )
    out += [
        "",
        "## Paired test (post-trained minus base, same tasks)",
        "",
        md_table(("measure", "value", "95% CI"), _paired(r)),
    ]
    out += [
        "",
        "## Timeline",
        "",
        md_table(
            ("step", "started", "ended", "took", "since release created"),
            timeline_cells(r.timeline),
        ),
    ]
    title, name, alt = SECTIONS[2]
    out += [
        "",
        f"## {title}",
        "",
        _plot_section(title, name, alt, images, False),
        "",
        md_table(COST_HEADER, _costs(r)),
    ]
    if r.agent_tasks:
        out += ["", "## Agent (post-trained model, per task)", "", _agent_md(r)]
    if r.notes:
        out += ["", "## Notes", ""] + [f"- {_cell(n)}" for n in r.notes]
    return "\n".join(out) + "\n"


# -- the multi-release summary ---------------------------------------------------------------


def summary_markdown(model: str, rows: Sequence[Row], skipped: Sequence[str] = ()) -> str:
    """The adoption table for several versions (what ``uptake demo`` prints at the end)."""
    out = [f"# {model} — adoptions", "", md_table(TABLE_HEADER, [row_cells(r) for r in rows])]
    if skipped:
        out += ["", "Not reported:", ""] + [f"- {_cell(s)}" for s in skipped]
    return "\n".join(out) + "\n"


def summary_html(
    model: str,
    rows: Sequence[Row],
    skipped: Sequence[str] = (),
    links: dict[str, str] | None = None,
) -> str:
    links = links or {}
    table = _html_table(TABLE_HEADER, [html_row_cells(r) for r in rows], "adoption")
    for version, href in links.items():  # link each version cell to its own page
        table = table.replace(
            f"<td>v{_h(version)}</td>", f'<td><a href="{_h(href)}">v{_h(version)}</a></td>', 1
        )
    body = [f"<h1>{_h(model)} — adoptions</h1>", table]
    if skipped:
        body.append(
            "<h2>Not reported</h2><ul>" + "".join(f"<li>{_h(s)}</li>" for s in skipped) + "</ul>"
        )
    return _page(f"{model} — adoptions", "\n".join(body))

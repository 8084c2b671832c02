"""The report's plots as PNG bytes (matplotlib, Agg backend: no display needed).

- score distribution: per-task scores of the base model and the post-trained model in ten
  bins, the field report's chart (does the mass move from the 40–80% band to 80–100%?);
- per area: all-pass rate per practice area, before and after, with 95% bootstrap intervals;
- quality–cost: all-pass and criterion pass rate against cost per task for every model scored
  on the suite.

A plot whose data is missing is left out (the page says why); it is never drawn empty.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

from registry.report.model import AreaBar, CostPoint, VersionReport
from uptake.formatting import shorten

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn
    from matplotlib.figure import Figure

SCORE_PLOT = "score_distribution.png"
AREA_PLOT = "per_area.png"
COST_PLOT = "quality_cost.png"
LABEL_CHARS = 40  # a point's label on the quality-cost chart
BASE_COLOR, POST_COLOR = "#9aa5b1", "#1f6feb"
_KIND_COLORS = {
    "base": BASE_COLOR,
    "candidate": "#2da44e",
    "champion": POST_COLOR,
    "external": "#cf222e",
}


def _figure(width: float = 6.4, height: float = 3.6) -> Figure:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # a Figure of its own: no global pyplot state

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _bins(scores: Sequence[float]) -> list[float]:
    """Share of tasks per tenth (a score on an edge goes up, 1.0 in the last bin)."""
    counts = [0] * 10
    for s in scores:
        counts[min(9, int(round(s * 100, 6) // 10))] += 1
    return [c / len(scores) for c in counts] if scores else [0.0] * 10


def score_plot(base: Sequence[float] | None, post: Sequence[float]) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    xs = [i * 10 + 5 for i in range(10)]
    ax.axvspan(40, 80, color="#fff3c4", zorder=0, label="40–80% band")
    ax.axvspan(80, 100, color="#d7f5dd", zorder=0, label="80–100% band")
    if base:
        ax.bar(
            [x - 2 for x in xs],
            [100 * v for v in _bins(base)],
            width=4,
            color=BASE_COLOR,
            label=f"base ({len(base)} tasks)",
        )
    ax.bar(
        [x + 2 for x in xs],
        [100 * v for v in _bins(post)],
        width=4,
        color=POST_COLOR,
        label=f"post-trained ({len(post)} tasks)",
    )
    ax.set_xlim(0, 100)
    ax.set_xticks(range(0, 101, 10))
    ax.set_xlabel("per-task score (% of criteria passed)")
    ax.set_ylabel("% of tasks")
    ax.set_title("Per-task score distribution, before and after")
    ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def _err(value: float | None, low: float | None, high: float | None) -> tuple[float, float]:
    if value is None or low is None or high is None:
        return (0.0, 0.0)
    return (max(0.0, value - low) * 100, max(0.0, high - value) * 100)


def area_plot(bars: Sequence[AreaBar]) -> bytes:
    fig = _figure(width=max(6.4, 1.2 * len(bars) + 2))
    ax = fig.add_subplot()
    xs = list(range(len(bars)))
    for offset, field, color, label in (
        (-0.2, "base", BASE_COLOR, "base"),
        (0.2, "post", POST_COLOR, "post-trained"),
    ):
        values = [getattr(b, field) for b in bars]
        errs = [
            _err(getattr(b, field), getattr(b, f"{field}_low"), getattr(b, f"{field}_high"))
            for b in bars
        ]
        ax.bar(
            [x + offset for x in xs],
            [100 * (v or 0.0) for v in values],
            width=0.4,
            color=color,
            label=label,
            yerr=[[e[0] for e in errs], [e[1] for e in errs]],
            capsize=4,
        )
    ax.set_xticks(xs, [b.area for b in bars], rotation=20 if len(bars) > 4 else 0)
    ax.set_ylim(0, 105)
    ax.set_ylabel("all-pass rate (%)")
    ax.set_title("All-pass rate per practice area (95% intervals)")
    ax.legend(fontsize=8)
    return _png(fig)


def cost_plot(points: Sequence[CostPoint]) -> bytes:
    priced = [p for p in points if p.cost_per_task is not None]
    fig = _figure(width=7.2, height=4.2)
    ax = fig.add_subplot()
    costs = [p.cost_per_task or 0.0 for p in priced]
    middle = sorted(costs)[(len(costs) - 1) // 2] if costs else 0.0  # lower median
    for p, cost in zip(priced, costs, strict=True):
        color = _KIND_COLORS[p.kind]
        size = 90 if p.this_version else 50
        for score, marker in ((p.all_pass, "o"), (p.criterion, "^")):
            ax.scatter(
                cost,
                100 * score,
                marker=marker,
                s=size,
                color=color,
                edgecolors="black" if p.this_version else "none",
            )
        # a short label on the side with room; kept out of the layout, so a long model name
        # never squeezes the axes (the table below the chart has every full name)
        on_right = (p.cost_per_task or 0.0) > middle  # its label goes to the left
        note = ax.annotate(
            shorten(p.label, LABEL_CHARS),
            (p.cost_per_task, 100 * p.criterion),
            fontsize=7,
            xytext=(-4 if on_right else 4, 4),
            textcoords="offset points",
            ha="right" if on_right else "left",
        )
        note.set_in_layout(False)
    if costs and min(costs) > 0 and max(costs) / min(costs) > 10:  # a free model stays linear
        ax.set_xscale("log")
    for kind, color in _KIND_COLORS.items():
        ax.scatter([], [], color=color, label=kind)
    ax.scatter([], [], marker="o", color="white", edgecolors="black", label="● all-pass")
    ax.scatter([], [], marker="^", color="white", edgecolors="black", label="▲ criterion")
    ax.set_ylim(0, 105)
    ax.set_xlabel("cost per task")
    ax.set_ylabel("pass rate (%)")
    ax.set_title("Quality against cost, every model scored on the suite")
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def plots(report: VersionReport) -> dict[str, bytes]:
    """File name -> PNG for every plot the data allows."""
    out: dict[str, bytes] = {}
    if report.post_scores:
        out[SCORE_PLOT] = score_plot(report.base_scores, report.post_scores)
    if report.areas:
        out[AREA_PLOT] = area_plot(report.areas)
    if any(p.cost_per_task is not None for p in report.cost_points):
        out[COST_PLOT] = cost_plot(report.cost_points)
    return out

"""The human-readable outputs: a Markdown report and two PNG plots.

The plots reproduce the views of the field report that motivated uptake: the per-task score
distribution of baseline vs candidate overlaid (does the mass move from 40–80% to 80–100%?)
and per-practice-area rates with their bootstrap intervals.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from pydantic import BaseModel

from pipeline.eval.compare import PairedComparison, compare
from pipeline.eval.metrics import N_BINS, AreaMetrics
from pipeline.eval.results import EvalResult
from uptake.formatting import MISSING, percent, points

SCORE_PLOT = "score_distribution.png"
_TRAILING_PAREN = re.compile(r"\s*\([^()]*\)\s*$")
AREA_PLOT = "per_area.png"
REPORT = "report.md"


class ReportFiles(BaseModel):
    report: Path
    score_plot: Path
    area_plot: Path


def bin_labels() -> list[str]:
    step = 100 // N_BINS
    return [f"{i * step}–{(i + 1) * step}%" for i in range(N_BINS)]


def plot_score_distribution(
    result: EvalResult, path: Path, baseline: EvalResult | None = None
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(N_BINS))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if baseline is not None:
        counts = baseline.metrics.score_histogram
        share = [100 * c / baseline.metrics.n_tasks for c in counts]
        ax.bar(
            x,
            share,
            width=0.9,
            alpha=0.55,
            color="#888888",
            label=f"baseline ({_short(baseline.model)})",
        )
    counts = result.metrics.score_histogram
    share = [100 * c / result.metrics.n_tasks for c in counts]
    ax.bar(
        x,
        share,
        width=0.9 if baseline is None else 0.6,
        alpha=0.75,
        color="#1f77b4",
        label=f"candidate ({_short(result.model)})",
    )
    ax.set_xticks(x, bin_labels(), rotation=45, ha="right")
    ax.set_xlabel("task score (share of criteria passed)")
    ax.set_ylabel("% of tasks")
    ax.set_title(f"Score distribution — {result.suite_name} ({result.metrics.n_tasks} tasks)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _area_values(
    areas: list[str], per_area: dict[str, AreaMetrics], metric: str
) -> tuple[list[float], list[list[float]]]:
    values, errs_low, errs_high = [], [], []
    for area in areas:
        a = per_area.get(area)
        value = getattr(a, metric) if a is not None else None
        if value is None or a is None or a.ci is None:
            values.append(0.0)
            errs_low.append(0.0)
            errs_high.append(0.0)
            continue
        ci = getattr(a.ci, metric)
        values.append(100 * value)
        errs_low.append(max(0.0, 100 * (value - ci.low)))
        errs_high.append(max(0.0, 100 * (ci.high - value)))
    return values, [errs_low, errs_high]


def plot_per_area(result: EvalResult, path: Path, baseline: EvalResult | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    areas = sorted(
        set(result.metrics.per_area) | set(baseline.metrics.per_area if baseline else ())
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    width = 0.38 if baseline is not None else 0.7
    pos = list(range(len(areas)))
    for ax, metric, title in zip(
        axes,
        ("all_pass_rate", "criterion_pass_rate"),
        ("All-pass rate", "Criterion pass rate"),
        strict=True,
    ):
        if baseline is not None:
            vals, err = _area_values(areas, baseline.metrics.per_area, metric)
            ax.bar(
                [p - width / 2 for p in pos],
                vals,
                width,
                yerr=err,
                capsize=3,
                color="#888888",
                label="baseline",
            )
        vals, err = _area_values(areas, result.metrics.per_area, metric)
        shift = width / 2 if baseline is not None else 0.0
        ax.bar(
            [p + shift for p in pos],
            vals,
            width,
            yerr=err,
            capsize=3,
            color="#1f77b4",
            label="candidate",
        )
        ax.set_xticks(pos, areas, rotation=30, ha="right")
        ax.set_title(f"{title} (95% CI)")
        ax.set_ylim(0, 105)
    axes[0].set_ylabel("%")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _short(model: str) -> str:
    return model if len(model) <= 40 else "…" + model[-39:]


def render_markdown(
    result: EvalResult,
    baseline: EvalResult | None = None,
    comparison: PairedComparison | None = None,
    *,
    images: bool = True,
) -> str:
    m = result.metrics
    conf = f"{round(100 * m.confidence)}%"
    lines = [
        f"# Evaluation report — {result.suite_name}",
        "",
        f"- model: `{result.model}` ({result.backend} backend)",
        f"- suite: `{result.suite_name}` sha256 `{result.suite_sha256}`",
        f"- {m.n_tasks} tasks, {m.n_criteria} criteria; {conf} intervals from "
        f"{m.bootstrap_samples} task-level bootstrap resamples (seed {m.seed})",
    ]
    if m.tasks_context_exceeded or m.tasks_generation_truncated:
        lines.append(
            f"- context: {m.tasks_context_exceeded} task(s) did not fit the model's context "
            f"(`context_exceeded`, scored as failing every criterion); "
            f"{m.tasks_generation_truncated} generated only up to its end "
            f"(`generation_truncated`)"
        )
    if result.generation.seconds > 0:
        g = result.generation
        lines.append(
            f"- generation: {g.seconds:.1f} s, {g.n_tokens} tokens ({g.tokens_per_s:.0f} tokens/s, "
            f"batch {g.batch_size})"
        )
    lines += ["", "## Headline", ""]
    if baseline is not None and comparison is not None:
        lines += [
            f"| metric | baseline | candidate | difference | {conf} CI of difference |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, d in (
            ("all-pass rate", comparison.all_pass_rate),
            ("criterion pass rate", comparison.criterion_pass_rate),
        ):
            lines.append(
                f"| {name} | {percent(d.baseline)} | {percent(d.candidate)} | {points(d.diff)} | "
                f"[{points(d.ci.low)}, {points(d.ci.high)}] |"
            )
        mc = comparison.mcnemar
        lines += [
            "",
            f"McNemar exact test on all-pass: {mc.candidate_only} tasks pass only for the "
            "candidate, "
            f"{mc.baseline_only} only for the baseline; p = {mc.p_value:.4g}.",
        ]
    else:
        lines += [f"| metric | value | {conf} CI |", "| --- | --- | --- |"]
        for name, value, ci in (
            ("all-pass rate", m.all_pass_rate, m.ci.all_pass_rate),
            ("criterion pass rate", m.criterion_pass_rate, m.ci.criterion_pass_rate),
        ):
            lines.append(f"| {name} | {percent(value)} | [{percent(ci.low)}, {percent(ci.high)}] |")
    lines += ["", "## Per practice area", ""]
    if comparison is not None:
        lines += [
            "| area | tasks | all-pass (base → cand) | Δ all-pass "
            "| criterion (base → cand) | Δ criterion |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for area, c in comparison.per_area.items():
            lines.append(
                f"| {area} | {c.n_tasks} | {percent(c.all_pass_rate.baseline)} → "
                f"{percent(c.all_pass_rate.candidate)} | "
                f"{points(c.all_pass_rate.diff)} | {percent(c.criterion_pass_rate.baseline)} → "
                f"{percent(c.criterion_pass_rate.candidate)} | "
                f"{points(c.criterion_pass_rate.diff)} |"
            )
    else:
        lines += [
            f"| area | tasks | all-pass | {conf} CI | criterion pass | {conf} CI |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for area, a in m.per_area.items():
            ap = (
                f"[{percent(a.ci.all_pass_rate.low)}, {percent(a.ci.all_pass_rate.high)}]"
                if a.ci
                else MISSING
            )
            cp = (
                f"[{percent(a.ci.criterion_pass_rate.low)}, "
                f"{percent(a.ci.criterion_pass_rate.high)}]"
                if a.ci
                else MISSING
            )
            lines.append(
                f"| {area} | {a.n_tasks} | {percent(a.all_pass_rate)} | {ap} "
                f"| {percent(a.criterion_pass_rate)} | {cp} |"
            )
    lines += [
        "",
        "## Task score distribution",
        "",
        "| score | tasks |" + (" baseline |" if baseline else ""),
        "| --- | --- |" + (" --- |" if baseline else ""),
    ]
    for i, label in enumerate(bin_labels()):
        row = f"| {label} | {m.score_histogram[i]} |"
        if baseline is not None:
            row += f" {baseline.metrics.score_histogram[i]} |"
        lines.append(row)
    deciles = ", ".join(percent(d, 0) for d in m.score_deciles)
    lines += ["", f"Deciles (10th…90th percentile): {deciles}. Mean score {percent(m.mean_score)}."]
    # Grouped by description without a trailing "(specifics)", so per-task variants add up.
    failures = Counter(
        _TRAILING_PAREN.sub("", c.description)
        for t in result.tasks
        for c in t.criteria
        if not c.passed
    )
    if failures:
        lines += ["", "## Most failed criteria", "", "| criterion | failures |", "| --- | --- |"]
        lines += [f"| {desc} | {n} |" for desc, n in failures.most_common(10)]
    lines += agent_section(result)
    if images:
        lines += [
            "",
            "## Plots",
            "",
            f"![score distribution]({SCORE_PLOT})",
            "",
            f"![per practice area]({AREA_PLOT})",
        ]
    return "\n".join(lines) + "\n"


def agent_section(result: EvalResult) -> list[str]:
    """Agentic suites: how each task was worked, next to its score, with its transcript."""
    if not any(t.agent for t in result.tasks):
        return []
    summary = result.summary()["agent"]
    lines = [
        "",
        "## Agent",
        "",
        f"- {summary['turns_mean']:.1f} turns and {summary['tool_calls_mean']:.1f} tool calls per "
        f"task; documents read {summary['documents_read']} of {summary['documents_present']}; "
        f"deliverables {summary['deliverables_produced']} of {summary['deliverables_expected']}",
        "- stop reasons: "
        + ", ".join(f"{k} {v}" for k, v in sorted(summary["stop_reasons"].items())),
        f"- judges: {', '.join(result.judges) or MISSING}; judge errors (not counted as fails): "
        f"{summary['judge_errors']}",
    ]
    if result.bash_available is not None:
        lines.append(
            "- bash: "
            + (
                "offered (bubblewrap, no network)"
                if result.bash_available
                else f"not offered ({result.bash_note})"
            )
        )
    for judge, rates in summary["judges"].items():
        lines.append(
            f"- judge {judge}: all-pass {percent(rates['all_pass_rate'])}, criterion "
            f"{percent(rates['criterion_pass_rate'])}, errors {rates['errors']}"
        )
    if summary["judge_agreement"] is not None:
        lines.append(f"- the two judges agree on {percent(summary['judge_agreement'])} of criteria")
    lines += [
        "",
        "| task | score | turns | tool calls | documents read | deliverables | tokens in/out "
        "| wall | stop | transcript |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in result.tasks:
        a = t.agent
        if a is None:
            continue
        link = f"[json]({a.transcript})" if a.transcript else MISSING
        lines.append(
            f"| {t.task_id} | {percent(t.score)} | {a.turns} | {a.tool_calls} | "
            f"{a.documents_read}/{a.documents_present} | {len(a.deliverables)}/"
            f"{a.deliverables_expected} | {t.prompt_tokens}/{t.n_tokens} | {a.wall_seconds:.1f} s "
            f"| {a.stop_reason} | {link} |"
        )
    return lines


def write_report(
    result: EvalResult,
    out_dir: str | Path,
    baseline: EvalResult | None = None,
    comparison: PairedComparison | None = None,
) -> ReportFiles:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if baseline is not None and comparison is None:
        comparison = compare(baseline, result)
    report = out / REPORT
    report.write_text(render_markdown(result, baseline, comparison), encoding="utf-8")
    return ReportFiles(
        report=report,
        score_plot=plot_score_distribution(result, out / SCORE_PLOT, baseline),
        area_plot=plot_per_area(result, out / AREA_PLOT, baseline),
    )

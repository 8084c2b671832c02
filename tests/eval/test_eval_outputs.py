"""Results JSONL round trip, Markdown report and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.eval import compare, load_results, run_eval, save_results
from pipeline.eval.report import render_markdown, write_report
from pipeline.eval.suite import Suite
from uptake.errors import InputError

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def small_suite(legal_suite) -> Suite:
    tasks = [t for area in legal_suite.areas for t in legal_suite.tasks if t.practice_area == area][
        :: len(legal_suite.tasks) // 24
    ]
    return legal_suite.model_copy(update={"tasks": tasks, "max_new_tokens": 8})


@pytest.fixture(scope="module")
def two_results(small_suite: Suite, tiny_model: Path, lively_backend):
    return run_eval(tiny_model, small_suite), run_eval(lively_backend, small_suite)


def test_results_jsonl_round_trip(two_results, tmp_path: Path) -> None:
    result = two_results[1]
    path = save_results(result, tmp_path / "r" / "results.jsonl")
    lines = path.read_text().splitlines()
    assert len(lines) == len(result.tasks)
    row = json.loads(lines[0])
    for key in ("task_id", "practice_area", "response", "criteria", "score", "all_pass"):
        assert key in row
    assert row["suite_sha256"] == result.suite_sha256 and row["model"] == result.model
    assert set(row["criteria"][0]) == {"id", "description", "type", "passed", "reason"}
    loaded = load_results(path)
    assert loaded.tasks == result.tasks
    assert loaded.metrics == result.metrics  # seeded bootstrap: identical intervals
    assert loaded.suite_sha256 == result.suite_sha256


def test_load_results_errors(tmp_path: Path, two_results) -> None:
    with pytest.raises(InputError, match="results file not found"):
        load_results(tmp_path / "none.jsonl")
    path = save_results(two_results[0], tmp_path / "r.jsonl")
    lines = path.read_text().splitlines()
    bad = json.loads(lines[1])
    del bad["response"]
    path.write_text("\n".join([lines[0], json.dumps(bad), "{oops", *lines[3:]]) + "\n")
    with pytest.raises(InputError) as info:
        load_results(path)
    assert "r.jsonl:2: response: Field required" in str(info.value)
    assert "r.jsonl:3: invalid JSON" in str(info.value)
    other = json.loads(lines[0])
    other["suite_sha256"] = "0" * 64
    path.write_text("\n".join([lines[0], json.dumps(other)]) + "\n")
    with pytest.raises(InputError, match="mixes 2 suites"):
        load_results(path)
    path.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(InputError, match="repeats task ids: " + json.loads(lines[1])["task_id"]):
        load_results(path)


def test_summary_has_the_cli_keys(two_results) -> None:
    summary = two_results[1].summary()
    for key in ("all_pass_rate", "criterion_pass_rate", "n_tasks", "n_criteria", "per_area", "ci"):
        assert key in summary
    assert set(summary["ci"]) == {"confidence", "all_pass_rate", "criterion_pass_rate"}
    assert set(summary["per_area"]) == {"contracts", "employment", "immigration", "landlord-tenant"}
    json.dumps(summary)


def test_report_and_plots(two_results, tmp_path: Path) -> None:
    cand = two_results[1]
    files = write_report(cand, tmp_path / "alone")
    for png in (files.score_plot, files.area_plot):
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 5_000
    text = files.report.read_text()
    assert f"| all-pass rate | {100 * cand.metrics.all_pass_rate:.1f}% |" in text
    assert "## Per practice area" in text and "| immigration |" in text
    assert "![score distribution](score_distribution.png)" in text


def test_report_with_baseline_shows_the_paired_comparison(two_results, tmp_path: Path) -> None:
    base, cand = two_results
    comparison = compare(base, cand)
    files = write_report(cand, tmp_path / "cmp", base, comparison)
    text = files.report.read_text()
    d = comparison.criterion_pass_rate
    assert f"| criterion pass rate | {100 * d.baseline:.1f}% | {100 * d.candidate:.1f}% |" in text
    assert "McNemar exact test" in text and f"p = {comparison.mcnemar.p_value:.4g}" in text
    assert "| score | tasks | baseline |" in text
    # the overlaid plot with a baseline differs from the candidate-only plot
    alone = write_report(cand, tmp_path / "alone")
    assert files.score_plot.read_bytes() != alone.score_plot.read_bytes()


def test_markdown_lists_most_failed_criteria(two_results) -> None:
    text = render_markdown(two_results[0], images=False)
    assert "## Most failed criteria" in text
    assert "| Names the governing provision |" in text  # specifics in parentheses grouped
    assert "![" not in text

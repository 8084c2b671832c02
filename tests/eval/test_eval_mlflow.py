"""MLflow logging against the real test MLflow server (session fixture ``mlflow_server``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from pipeline.eval import compare, log_to_mlflow, run_eval
from pipeline.eval.mlflow_log import eval_metrics
from uptake.mlflow_contract import RESULTS_TABLE_ARTIFACT as TABLE_FILE
from uptake.mlflow_contract import SUITE_SHA_TAG


@pytest.fixture
def tracking(mlflow_server) -> Iterator[str]:
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server.tracking_uri)
    mlflow.set_experiment(f"eval-test-{uuid.uuid4().hex[:8]}")
    try:
        yield mlflow_server.tracking_uri
    finally:
        if mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def results(legal_suite, tiny_model, lively_backend):
    tasks = legal_suite.tasks[::8]
    suite = legal_suite.model_copy(update={"tasks": tasks, "max_new_tokens": 6})
    return run_eval(tiny_model, suite), run_eval(lively_backend, suite)


def test_metric_names_follow_design(results) -> None:
    base, cand = results
    names = eval_metrics(cand, base)
    for key in (
        "all_pass_rate",
        "criterion_pass_rate",
        "all_pass_rate.ci_low",
        "all_pass_rate.ci_high",
        "criterion_pass_rate.ci_low",
        "criterion_pass_rate.ci_high",
        "all_pass_rate.immigration",
        "criterion_pass_rate.landlord-tenant",
        "all_pass_rate.contracts.ci_low",
        "baseline.all_pass_rate",
        "baseline.criterion_pass_rate",
        "baseline.all_pass_rate.employment",
        "delta.all_pass_rate",
        "delta.criterion_pass_rate.ci_low",
        "delta.all_pass_rate.immigration",
        "mcnemar_p",
    ):
        assert key in names, key
    assert names["all_pass_rate"] == cand.metrics.all_pass_rate
    assert names["baseline.criterion_pass_rate"] == base.metrics.criterion_pass_rate
    assert names["delta.criterion_pass_rate"] == pytest.approx(
        compare(base, cand).criterion_pass_rate.diff
    )
    assert "baseline.all_pass_rate" not in eval_metrics(cand)


def test_log_to_mlflow_active_run(tracking: str, results) -> None:
    import mlflow

    base, cand = results
    with mlflow.start_run() as run:
        logged = log_to_mlflow(cand, baseline=base)
    client = mlflow.MlflowClient()
    stored = client.get_run(run.info.run_id)
    assert stored.data.metrics == pytest.approx(logged)
    assert stored.data.metrics["all_pass_rate"] == pytest.approx(cand.metrics.all_pass_rate)
    assert stored.data.metrics["criterion_pass_rate"] == pytest.approx(
        cand.metrics.criterion_pass_rate
    )
    assert stored.data.tags[SUITE_SHA_TAG] == cand.suite_sha256
    names = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    assert {
        "eval/score_distribution.png",
        "eval/per_area.png",
        "eval/report.md",
        "eval/results.jsonl",
        "eval/baseline_results.jsonl",
        TABLE_FILE,
    } <= names
    table_path = client.download_artifacts(run.info.run_id, TABLE_FILE)
    with open(table_path) as fh:
        table = json.load(fh)
    assert "task_id" in table["columns"] and len(table["data"]) == len(cand.tasks)
    report = client.download_artifacts(run.info.run_id, "eval/report.md")
    with open(report) as fh:
        assert "McNemar" in fh.read()


def test_log_to_mlflow_without_active_run_makes_its_own(tracking: str, results) -> None:
    import mlflow

    cand = results[1]
    assert mlflow.active_run() is None
    logged = log_to_mlflow(cand)
    assert mlflow.active_run() is None
    runs = mlflow.search_runs(output_format="list")
    assert len(runs) == 1
    assert runs[0].data.metrics["all_pass_rate"] == pytest.approx(logged["all_pass_rate"])
    assert "baseline.all_pass_rate" not in runs[0].data.metrics


def _result_with_areas(areas: dict[str, list[int]]):
    from tests.registry.helpers import eval_result

    return eval_result(areas, "m", "s" * 64)


# Before: "M&A" and "M_A" became one metric (the second overwrote the first), "ci_low" overwrote
# the overall rate's bound, and "IP//Tech" gave a name the MLflow server refuses.
AWKWARD_AREAS = {"M&A": [3], "M_A": [0], "IP//Tech": [3], "tax.ci_low": [0], "ci_low": [3, 3]}


def test_every_practice_area_gets_its_own_valid_metric() -> None:
    from mlflow.utils.validation import _validate_metric

    from uptake.mlflow_contract import ALL_PASS_RATE, CI_LOW_SUFFIX, area_metric

    names = eval_metrics(_result_with_areas(AWKWARD_AREAS))
    per_area = {area: names.get(area_metric(ALL_PASS_RATE, area)) for area in AWKWARD_AREAS}
    assert names[ALL_PASS_RATE + CI_LOW_SUFFIX] < 1.0  # the overall bound, not area "ci_low"
    assert per_area == {"M&A": 1.0, "M_A": 0.0, "IP//Tech": 1.0, "tax.ci_low": 0.0, "ci_low": 1.0}
    for name in names:
        _validate_metric(name, 0.0, 0, 0)


def test_awkward_area_names_round_trip_through_mlflow_to_the_gate(tracking: str) -> None:
    import mlflow

    from registry.evidence import area_rates

    logged = log_to_mlflow(_result_with_areas(AWKWARD_AREAS))
    stored = mlflow.search_runs(output_format="list")[0].data.metrics
    assert stored == pytest.approx(logged)
    assert area_rates(stored) == {
        "M&A": 1.0,
        "M_A": 0.0,
        "IP//Tech": 1.0,
        "tax.ci_low": 0.0,
        "ci_low": 1.0,
    }

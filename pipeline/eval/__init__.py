"""Evaluation engine: rubric suites, graders, all-pass / criterion metrics with uncertainty.

Public API (other packages use only these names):

- ``load_suite(path) -> Suite | AgenticSuite`` — a JSONL suite or a LAB task directory,
  validated, with ``.tasks`` and ``.sha256`` (``suite_sha256(path)`` without loading);
- ``run_eval(model, suite, ...) -> EvalResult`` — generate, grade, compute metrics;
- ``compare(baseline, candidate) -> PairedComparison`` — paired bootstrap + McNemar;
- ``log_to_mlflow(result, baseline=None)`` — metrics, per-task table, plots, report;
- ``check_holdout(train_path, suite)`` — refuse a suite that leaks into training data;
- ``save_results`` / ``load_results`` — the results JSONL.
"""

from pipeline.eval.compare import PairedComparison, compare, mcnemar_exact
from pipeline.eval.holdout import check_holdout, find_overlap
from pipeline.eval.metrics import Metrics, compute_metrics
from pipeline.eval.mlflow_log import eval_metrics, log_to_mlflow
from pipeline.eval.results import EvalResult, TaskResult, load_results, save_results
from pipeline.eval.runner import run_eval
from pipeline.eval.suite import Suite, Task
from pipeline.eval.suites import AnySuite, load_suite, suite_sha256

__all__ = [
    "AnySuite",
    "EvalResult",
    "Metrics",
    "PairedComparison",
    "Suite",
    "Task",
    "TaskResult",
    "check_holdout",
    "compare",
    "compute_metrics",
    "eval_metrics",
    "find_overlap",
    "load_results",
    "load_suite",
    "log_to_mlflow",
    "mcnemar_exact",
    "run_eval",
    "save_results",
    "suite_sha256",
]

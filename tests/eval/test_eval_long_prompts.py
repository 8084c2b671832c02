"""Prompts near or over a model's context: the run goes on, the task is flagged and counted."""

from __future__ import annotations

from pathlib import Path

from pipeline.eval import load_suite, run_eval
from pipeline.eval.mlflow_log import eval_metrics, results_table
from pipeline.eval.report import render_markdown
from tests.eval.helpers import task, train_corpus, write_suite
from uptake.mlflow_contract import TASKS_CONTEXT_EXCEEDED, TASKS_GENERATION_TRUNCATED
from uptake.testing.tiny_models import TinyModelSpec, build_tiny_model


def test_long_prompts_fail_or_truncate_their_task_not_the_run(tmp_path: Path) -> None:
    model = build_tiny_model(
        tmp_path / "short-ctx", TinyModelSpec(max_position_embeddings=64), corpus=train_corpus()
    )
    lines = [
        task("fits", prompt="What is the deadline?", max_new_tokens=8),
        task("near", prompt="deadline " * 20, max_new_tokens=60),
        task("over", prompt="deadline " * 200, max_new_tokens=8),
    ]
    suite = load_suite(write_suite(tmp_path / "suite.jsonl", lines))
    result = run_eval(model, suite, device="cpu", n_boot=50)
    by_id = result.task_map()
    assert not by_id["fits"].generation_truncated and by_id["fits"].failure is None
    assert by_id["near"].generation_truncated and by_id["near"].failure is None
    assert by_id["over"].failure == "context_exceeded"
    assert all(
        not c.passed and c.reason.startswith("context_exceeded") for c in by_id["over"].criteria
    )
    assert result.metrics.n_tasks == 3  # scored on every task of the suite
    assert result.metrics.tasks_context_exceeded == 1
    assert result.metrics.tasks_generation_truncated == 1

    # what log_to_mlflow logs (metrics, per-task table) and the report say the same
    logged = eval_metrics(result, baseline=result)
    assert logged[TASKS_CONTEXT_EXCEEDED] == 1 and logged[TASKS_GENERATION_TRUNCATED] == 1
    assert logged[f"baseline.{TASKS_CONTEXT_EXCEEDED}"] == 1
    table = results_table(result)
    assert table["failure"][table["task_id"].index("over")] == "context_exceeded"
    assert table["generation_truncated"][table["task_id"].index("near")] is True
    report = render_markdown(result, images=False)
    assert "1 task(s) did not fit the model's context (`context_exceeded`" in report

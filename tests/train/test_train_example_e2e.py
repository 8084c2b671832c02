"""End-to-end proof that the recipe teaches something: the example recipe on a tiny model raises
the example suite's all-pass rate (scored by the eval engine) well above the base model's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.eval import load_suite, run_eval
from pipeline.train import load_recipe
from uptake.cli import main
from uptake.tiny_models import TinyModelSpec, build_tiny_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "legal"


@pytest.mark.slow
def test_example_recipe_raises_the_example_suite_all_pass_rate(tmp_path, capsys) -> None:
    recipe_path = EXAMPLES / "recipe.yaml"
    recipe = load_recipe(recipe_path)
    assert recipe.stages.sft.data == EXAMPLES / "train.jsonl"
    rows = [
        json.loads(line) for line in (EXAMPLES / "train.jsonl").read_text().splitlines() if line
    ]
    corpus = [m["content"] for row in rows for m in row["messages"]]
    # A random-weight model whose tokenizer is trained on the training corpus.
    base = build_tiny_model(tmp_path / "base", TinyModelSpec(arch="llama"), corpus=corpus)

    out = tmp_path / "run"
    main(
        [
            "train",
            "--model",
            str(base),
            "--recipe",
            str(recipe_path),
            "--out",
            str(out),
            "--profile",
            "cpu",
        ]
    )
    assert "training summary" in capsys.readouterr().out

    suite = load_suite(EXAMPLES / "suite.jsonl")
    trained = run_eval(out / "model", suite, batch_size=16)
    before = run_eval(base, suite, batch_size=16)
    b, t = before.metrics, trained.metrics
    print(f"all-pass {b.all_pass_rate:.3f} -> {t.all_pass_rate:.3f}")
    print(f"criterion {b.criterion_pass_rate:.3f} -> {t.criterion_pass_rate:.3f}")
    assert trained.metrics.all_pass_rate >= 0.2
    assert trained.metrics.all_pass_rate >= before.metrics.all_pass_rate + 0.15
    assert trained.metrics.criterion_pass_rate > before.metrics.criterion_pass_rate + 0.3
    # The model learned to stop: most answers end on the end-of-turn token, not the length cap.
    stopped = sum(t.finish_reason == "stop" for t in trained.tasks)
    assert stopped >= 0.9 * len(trained.tasks)

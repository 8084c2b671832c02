"""End-to-end proof that the recipe teaches something: the example recipe on a tiny model raises
the example suite's all-pass rate (scored by the eval engine) well above the base model's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.eval.results import load_results
from pipeline.train import load_recipe
from tests.train.helpers import train_argv
from uptake.cli import main
from uptake.testing.tiny_models import TinyModelSpec, build_tiny_model

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
    main(train_argv(base, recipe_path, out))
    assert "training summary" in capsys.readouterr().out

    # Scored as a user would: `uptake eval` on the base, then on the trained model against it.
    suite = str(EXAMPLES / "suite.jsonl")
    before = uptake_eval(
        capsys, "--model", str(base), "--suite", suite, "--out", str(tmp_path / "b")
    )
    trained = uptake_eval(
        capsys, "--model", str(out / "model"), "--suite", suite, "--out", str(tmp_path / "t"),
        "--baseline", str(tmp_path / "b" / "results.jsonl"),
    )  # fmt: skip
    print(f"all-pass {before['all_pass_rate']:.3f} -> {trained['all_pass_rate']:.3f}")
    print(f"criterion {before['criterion_pass_rate']:.3f} -> {trained['criterion_pass_rate']:.3f}")
    assert trained["all_pass_rate"] >= 0.2
    assert trained["all_pass_rate"] >= before["all_pass_rate"] + 0.15
    assert trained["criterion_pass_rate"] > before["criterion_pass_rate"] + 0.3
    assert trained["comparison"]["baseline_model"] == str(base)
    # The model learned to stop: most answers end on the end-of-turn token, not the length cap.
    tasks = load_results(tmp_path / "t" / "results.jsonl").tasks
    stopped = sum(t.finish_reason == "stop" for t in tasks)
    assert stopped >= 0.9 * len(tasks)


def uptake_eval(capsys, *args: str) -> dict:
    capsys.readouterr()
    main(["eval", *args, "--batch-size", "16", "--json"])
    return json.loads(capsys.readouterr().out)

"""GRPO on the rubric, for real: a tiny model learns to say the word its rubric rewards."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from pipeline.train import train
from pipeline.train.recipe import load_recipe
from tests.train.helpers import write_jsonl, write_recipe
from tests.train.rl_helpers import SFT_STAGE, grpo_stage, sometimes_estoppel_rows, write_rl_data


@pytest.mark.slow
def test_sft_then_grpo_raises_the_rubric_reward(estoppel_model: Path, tmp_path) -> None:
    recipe_dir = tmp_path / "recipe"
    recipe_dir.mkdir()
    write_jsonl(recipe_dir / "train.jsonl", sometimes_estoppel_rows())
    write_rl_data(recipe_dir)
    path = write_recipe(recipe_dir, stages={"sft": SFT_STAGE, "grpo": grpo_stage()})
    recipe = load_recipe(path)
    assert recipe.stages.names() == ["sft", "grpo"]

    events = []
    result = train(
        estoppel_model, recipe, tmp_path / "run", profile="cpu", on_progress=events.append
    )

    grpo = result.stages[-1]
    assert [s.name for s in result.stages] == ["sft", "grpo"]
    means = [v for _, v in grpo.metrics["reward/reward_mean"]]
    assert len(means) == 30
    early, late = statistics.fmean(means[:8]), statistics.fmean(means[-8:])
    assert late > early + 0.4, means  # from "rarely" towards "mostly" (seeded: ~0.1 -> ~1.0)
    all_pass = [v for _, v in grpo.metrics["reward/all_pass_rate"]]
    assert statistics.fmean(all_pass[-5:]) > 0.5, all_pass
    assert grpo.metrics["reward/tokens_generated"][0][1] > 0
    # progress carries the reward mean; the series survives on disk for a resume
    assert any(e.stage == "grpo" and e.reward_mean is not None for e in events)
    lines = (tmp_path / "run" / "grpo" / "rewards.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 31))
    assert (result.model_dir / "config.json").is_file()

"""A release adopted with an SFT -> GRPO recipe (recipe-rl.yaml's shape, tiny budgets): one
registered version, its run carrying the per-step reward metrics of the GRPO stage."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.worker.job import run_job
from tests.train.helpers import write_recipe
from tests.train.rl_helpers import write_rl_data
from tests.worker.helpers import TINY_SFT, build_release_dir, dir_release, job_spec, make_track
from tests.worker.runs_topic import run_events
from uptake.events import RunStage

pytestmark = [pytest.mark.slow, pytest.mark.one_backend]
GRPO = {
    "data": "tasks.jsonl",
    "max_steps": 3,
    "batch_size": 2,
    "num_generations": 2,
    "max_new_tokens": 6,
    "learning_rate": 5e-3,
    "save_steps": 2,
}


def test_an_rl_recipe_registers_one_version_with_reward_metrics(
    stack, drops: Path, unique, tmp_path: Path
) -> None:
    repo = f"acme/{unique('rl')}"
    build_release_dir(drops, repo)
    track = make_track(tmp_path, "legal-rl", unique("uptake-legal-rl"))
    directory = Path(track.recipe).parent
    write_rl_data(directory)
    write_recipe(directory, max_length=96, stages={"sft": TINY_SFT, "grpo": GRPO})

    spec = job_spec(stack, dir_release(drops, repo), track)
    outcome = run_job(spec)
    assert outcome.ok

    c = MlflowClient(tracking_uri=stack.tracking_uri, registry_uri=stack.tracking_uri)
    (mv,) = c.search_model_versions(f"name = '{track.registered_model}'")
    run = c.get_run(mv.run_id)
    metrics = run.data.metrics
    assert metrics["train.steps"] == TINY_SFT["max_steps"] + GRPO["max_steps"]
    assert "grpo.reward/reward_mean.last" in metrics
    history = c.get_metric_history(mv.run_id, "grpo.reward/reward_mean")
    assert [m.step for m in history] == [1, 2, 3]
    for name in ("criterion_pass_rate", "all_pass_rate", "zero_spread_groups", "judge_calls"):
        assert len(c.get_metric_history(mv.run_id, f"grpo.reward/{name}")) == 3
    assert run.data.params["recipe.stages.grpo.num_generations"] == "2"
    # the GRPO steps' progress carries the reward mean in run.stage (what `uptake status` shows)
    rewards = [
        e.reward_mean
        for e in run_events(stack, spec.release.release_id)
        if isinstance(e, RunStage) and e.stage == "train" and e.reward_mean is not None
    ]
    assert rewards and all(0.0 <= r <= 1.5 for r in rewards)

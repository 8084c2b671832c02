"""RL stages in the recipe: optional SFT, the file's order, defaults, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.train import RecipeError, load_recipe
from pipeline.train.data import DataError
from pipeline.train.recipe import halved_batch
from pipeline.train.trainer import load_stage_data
from tests.train.helpers import base_recipe, write_jsonl
from tests.train.rl_helpers import estoppel_tasks, write_rl_data


def write(directory: Path, stages: dict, **over: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_rl_data(directory)
    write_jsonl(directory / "train.jsonl", [])
    recipe = {**base_recipe(**over), "stages": stages}
    path = directory / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def test_an_rl_only_recipe_runs_its_stages_in_the_files_order(tmp_path: Path) -> None:
    both = write(tmp_path / "a", {"sdpo": {"data": "tasks.jsonl"}, "grpo": {"data": "tasks.jsonl"}})
    recipe = load_recipe(both)
    assert recipe.stages.sft is None
    assert recipe.stages.names() == ["sdpo", "grpo"]
    assert recipe.resolve("cpu").stages.names() == ["sdpo", "grpo"]
    assert halved_batch(recipe)[0].stages.names() == ["sdpo", "grpo"]
    other = write(
        tmp_path / "b", {"grpo": {"data": "tasks.jsonl"}, "sdpo": {"data": "tasks.jsonl"}}
    )
    assert load_recipe(other).stages.names() == ["grpo", "sdpo"]


def test_rl_defaults(tmp_path: Path) -> None:
    recipe = load_recipe(
        write(tmp_path, {"grpo": {"data": "tasks.jsonl"}, "sdpo": {"data": "tasks.jsonl"}})
    )
    grpo, sdpo = recipe.stages.grpo, recipe.stages.sdpo
    assert grpo is not None and sdpo is not None
    assert grpo.reward.all_pass_bonus == 0.2 and grpo.num_generations == 8
    assert grpo.learning_rate == 2e-4 and grpo.beta == 0.0
    assert sdpo.distillation_weight == 0.5 and sdpo.teacher == "ema"
    assert "{feedback_raw}" in sdpo.feedback_template


def test_halved_batch_halves_the_prompts_of_an_rl_stage(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, {"grpo": {"data": "tasks.jsonl", "batch_size": 4}}))
    halved, note = halved_batch(recipe)
    assert halved.stages.grpo is not None
    assert (halved.stages.grpo.batch_size, halved.stages.grpo.gradient_accumulation_steps) == (2, 2)
    assert note == "grpo: batch 4x1 -> 2x2"


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ({}, "stages: Value error, needs at least one stage"),
        ({"dpo": {"data": "train.jsonl"}}, "dpo needs an sft stage"),
        ({"grpo": {"data": "tasks.jsonl", "num_generations": 1}}, "stages.grpo.num_generations"),
        (
            {"sdpo": {"data": "tasks.jsonl", "distillation_weight": 2}},
            "stages.sdpo.distillation_weight",
        ),
        (
            {"sdpo": {"data": "tasks.jsonl", "feedback_template": "x"}},
            "must contain {feedback_raw}",
        ),
        ({"grpo": {"data": "tasks.jsonl", "reward": {"all_pass_bonus": -1}}}, "all_pass_bonus"),
        ({"grpo": {"data": "missing.jsonl"}}, "stages.grpo.data: Value error, data file not found"),
    ],
)
def test_bad_rl_stages_are_one_line_errors(tmp_path: Path, stages: dict, message: str) -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, stages))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_rl_data_without_criteria_is_refused_before_a_model_loads(tmp_path: Path) -> None:
    path = write(tmp_path, {"grpo": {"data": "tasks.jsonl"}})
    chats = [{"id": "x", "messages": [{"role": "user", "content": "hi"}]}]
    (tmp_path / "tasks.jsonl").write_text(json.dumps(chats[0]) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_stage_data(load_recipe(path))
    text = str(info.value)
    assert text.startswith("stages.grpo.data: rubric tasks needed:") and "criteria: missing" in text


def test_rl_stage_rows_name_their_task(tmp_path: Path) -> None:
    data = load_stage_data(load_recipe(write(tmp_path, {"grpo": {"data": "tasks.jsonl"}})))
    assert data.order == ["grpo"]
    first = estoppel_tasks()[0]
    assert data.rows["grpo"][0] == {"prompt": first["messages"], "task_id": first["id"]}
    assert [t.id for t in data.tasks["grpo"]] == [t["id"] for t in estoppel_tasks()]

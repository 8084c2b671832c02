"""The hold-out check covers an RL stage's rubric training tasks: overlap with the suite by task
id or by normalised prompt is a permanent failure naming the ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.eval.suite import load_suite
from pipeline.train.recipe import load_recipe
from pipeline.worker.failures import PermanentJobFailure
from pipeline.worker.stages import check_suite_holdout as holdout
from tests.train.helpers import base_recipe, write_jsonl
from tests.train.rl_helpers import estoppel_tasks
from tests.worker.helpers import suite_rows


def _setup(tmp_path: Path, rl_tasks: list[dict]) -> tuple[object, object]:
    write_jsonl(tmp_path / "train.jsonl", [])
    write_jsonl(tmp_path / "tasks.jsonl", rl_tasks)
    recipe = {**base_recipe(), "stages": {"grpo": {"data": "tasks.jsonl"}}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    suite = tmp_path / "suite.jsonl"
    suite.write_text("".join(json.dumps(r) + "\n" for r in suite_rows()), encoding="utf-8")
    return load_recipe(tmp_path / "recipe.yaml"), load_suite(suite)


def test_rl_tasks_disjoint_from_the_suite_pass(tmp_path: Path) -> None:
    recipe, suite = _setup(tmp_path, estoppel_tasks())
    holdout(recipe, suite)  # type: ignore[arg-type]


def test_rl_tasks_overlapping_the_suite_are_refused_naming_the_ids(tmp_path: Path) -> None:
    tasks = estoppel_tasks()
    same_id = {**tasks[0], "id": "imm-1"}  # a suite id
    # the suite's "tax-1" prompt, differently spaced and cased
    same_prompt = {
        **tasks[1],
        "messages": [{"role": "user", "content": "WRITE a memo on a  tax matter for Yara. "}],
    }
    recipe, suite = _setup(tmp_path, [same_id, same_prompt, *tasks[2:]])
    with pytest.raises(PermanentJobFailure) as info:
        holdout(recipe, suite)  # type: ignore[arg-type]
    reason = str(info.value)
    assert "task id 'imm-1'" in reason and "prompt of task 'tax-1'" in reason
    assert "tasks.jsonl" in reason and "emp-1" not in reason

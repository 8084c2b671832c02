"""RL-only recipes train, and a GRPO stage killed with SIGKILL resumes from its checkpoint with
its reward series intact; an SDPO stage runs through the same machinery."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.train import TrainProgress, load_recipe, train
from tests.train.helpers import (
    corpus,
    memo_rows,
    train_killed_after_checkpoint,
    write_jsonl,
    write_recipe,
)
from tests.train.rl_helpers import grpo_stage, write_rl_data
from uptake.errors import InputError
from uptake.testing.tiny_models import TinyModelSpec, build_tiny_model

MAX_STEPS = 14
SAVE_STEPS = 3


def _rl_only(directory: Path, stage: str, **over: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_jsonl(directory / "train.jsonl", [])
    write_rl_data(directory)
    return write_recipe(directory, stages={"sft": None, stage: grpo_stage(**over)})


@pytest.mark.slow
def test_a_killed_grpo_stage_resumes_from_its_checkpoint(estoppel_model: Path, tmp_path) -> None:
    recipe_path = _rl_only(
        tmp_path / "recipe", "grpo", max_steps=MAX_STEPS, save_steps=SAVE_STEPS, max_new_tokens=8
    )
    out = tmp_path / "run"
    killed_at = train_killed_after_checkpoint(
        estoppel_model, recipe_path, out, "grpo", 2 * SAVE_STEPS, tmp_path / "first.log"
    )
    assert 2 * SAVE_STEPS <= killed_at < MAX_STEPS

    events: list[TrainProgress] = []
    result = train(
        estoppel_model,
        load_recipe(recipe_path),
        out,
        profile="cpu",
        resume=True,
        on_progress=events.append,
    )
    (grpo,) = result.stages
    assert grpo.name == "grpo" and result.resumed_from_step == killed_at
    assert grpo.steps == MAX_STEPS and grpo.session_steps == MAX_STEPS - killed_at
    assert events[0].step == killed_at
    # one reward point per step: the killed attempt's up to the checkpoint, then this one's
    assert [s for s, _ in grpo.metrics["reward/reward_mean"]] == list(range(1, MAX_STEPS + 1))
    assert (result.model_dir / "config.json").is_file()


def test_an_rl_only_sdpo_recipe_trains(estoppel_model: Path, tmp_path) -> None:
    recipe_path = _rl_only(tmp_path / "recipe", "sdpo", max_steps=2, max_new_tokens=8)
    events: list[TrainProgress] = []
    result = train(
        estoppel_model,
        load_recipe(recipe_path),
        tmp_path / "run",
        profile="cpu",
        on_progress=events.append,
    )
    (sdpo,) = result.stages
    assert sdpo.name == "sdpo" and sdpo.steps == 2
    assert [s for s, _ in sdpo.metrics["reward/reward_mean"]] == [1, 2]
    assert (result.model_dir / "config.json").is_file()
    assert {e.stage for e in events} == {"sdpo"}


def test_an_ema_teacher_on_a_base_that_gets_new_tokens_is_a_clear_error(tmp_path) -> None:
    """TRL's EMA teacher needs pure LoRA; a base that preflight adds tokens to trains their
    embedding rows too, which TRL refused with a bare ValueError deep in its constructor."""
    spec = TinyModelSpec(arch="llama", chat_template="none", pad_equals_eos=True, bare_vocab=True)
    base = build_tiny_model(tmp_path / "base", spec, corpus=corpus(memo_rows(50)))
    recipe_path = _rl_only(tmp_path / "recipe", "sdpo", max_steps=1, max_new_tokens=4)
    with pytest.raises(InputError, match=r"stages\.sdpo\.teacher: 'ema' cannot start from a base"):
        train(base, load_recipe(recipe_path), tmp_path / "run", profile="cpu")

"""SDPO with the rubric's feedback: what the teacher is shown, per rollout, on a real trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.eval.suite import Task
from pipeline.train.config import sdpo_teacher_settings
from pipeline.train.recipe import SDPOStage
from pipeline.train.reward import RubricReward
from tests.train.helpers import write_jsonl

pytestmark = pytest.mark.slow  # real TRL trainers on a tiny model

HARD = {
    "id": "hard",
    "messages": [{"role": "user", "content": "Write a memo on a tax matter for Ana."}],
    "criteria": [
        {
            "id": "doctrine",
            "description": "Names ESTOPPEL",
            "check": {"type": "contains", "value": "ESTOPPEL"},
        },
        {"id": "memo", "description": "Says Memo", "check": {"type": "contains", "value": "Memo"}},
        {
            "id": "terse",
            "description": "Has no QQQZ",
            "check": {"type": "not_contains", "value": "QQQZ"},
        },
    ],
}
EASY = {
    "id": "easy",
    "messages": [{"role": "user", "content": "Write a memo on a housing matter for Bo."}],
    "criteria": [
        {
            "id": "clean",
            "description": "Has no ZZZQ",
            "check": {"type": "not_contains", "value": "ZZZQ"},
        }
    ],
}


def _user_text(messages: Any) -> str:
    return str(messages[-1]["content"]) if isinstance(messages, list) else str(messages)


def _sdpo_step(model_dir: Path, tmp_path: Path, **stage: Any) -> tuple[Any, RubricReward]:
    """One real SDPO step on the two tasks above (2 prompts x 4 rollouts, greedy-free)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.sdpo import SDPOConfig

    from pipeline.train.data import rubric_rows
    from pipeline.train.sdpo import RubricSDPOTrainer

    tasks = [Task.model_validate(HARD), Task.model_validate(EASY)]
    data = write_jsonl(tmp_path / "tasks.jsonl", [HARD, EASY])
    spec = SDPOStage.model_validate({"data": str(data), "num_generations": 4, **stage})
    reward = RubricReward(tasks, all_pass_bonus=0.2, num_generations=4)
    args = SDPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=10,
        max_steps=1,
        logging_steps=1,
        learning_rate=1e-4,
        report_to=[],
        use_cpu=True,
        seed=3,
        **sdpo_teacher_settings(spec),
    )
    trainer = RubricSDPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        reward_funcs=[reward],
        rubric=reward,
        args=args,
        train_dataset=Dataset.from_list(rubric_rows(tasks)),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    trainer.train()
    return trainer, reward


@pytest.fixture(scope="module")
def one_step(
    estoppel_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Any, RubricReward]:
    return _sdpo_step(estoppel_model, tmp_path_factory.mktemp("sdpo"), teacher="live")


def test_a_failed_rollouts_teacher_sees_exactly_its_failed_criteria(
    one_step: tuple[Any, RubricReward],
) -> None:
    trainer, reward = one_step
    shown = trainer.teacher_context_builder.last_teacher_messages
    grades = reward.last_grades
    assert len(shown) == len(grades) == 8
    hard = [i for i, g in enumerate(grades) if g.task_id == "hard"]
    assert len(hard) == 4 and not any(grades[i].all_passed for i in hard)
    for i in hard:
        text = _user_text(shown[i])
        assert text.startswith(HARD["messages"][0]["content"])
        assert "failed these criteria" in text
        for c in grades[i].criteria:
            assert (f"- {c.description} (" in text) == (not c.passed), (c, text)
        assert "Correct solution" not in text


def test_a_group_with_a_successful_rollout_shows_it_to_the_teacher(
    one_step: tuple[Any, RubricReward],
) -> None:
    trainer, reward = one_step
    shown = trainer.teacher_context_builder.last_teacher_messages
    grades = reward.last_grades
    easy = [i for i, g in enumerate(grades) if g.task_id == "easy"]
    assert len(easy) == 4 and all(grades[i].all_passed for i in easy)
    for i in easy:
        text = _user_text(shown[i])
        assert "Correct solution" in text and "failed these criteria" not in text


def test_the_rollouts_tokens_are_counted_as_grpo_counts_them(
    one_step: tuple[Any, RubricReward],
) -> None:
    """Prompt plus completion tokens of the step's 8 rollouts (TRL's SDPO counts none)."""
    trainer, reward = one_step
    [(_, generated)] = reward.metric_series()["reward/tokens_generated"]
    assert trainer.state.num_input_tokens_seen > generated > 0


def test_distillation_weight_zero_is_grpo(estoppel_model: Path, tmp_path: Path) -> None:
    """No distillation: the loss is GRPO's clipped policy-gradient loss alone, the teacher
    is not asked; with the default weight both losses count."""
    trainer, _ = _sdpo_step(estoppel_model, tmp_path, distillation_weight=0.0, teacher="live")
    (logged,) = [e for e in trainer.state.log_history if "loss" in e]
    assert "self_distillation/distillation_loss" not in logged
    assert logged["loss"] == pytest.approx(logged["self_distillation/policy_loss"], abs=1e-6)


def test_the_default_weight_mixes_in_the_distillation_loss(
    one_step: tuple[Any, RubricReward],
) -> None:
    trainer, _ = one_step
    (logged,) = [e for e in trainer.state.log_history if "loss" in e]
    assert "self_distillation/distillation_loss" in logged
    assert "self_distillation/policy_loss" in logged

"""SDPO with per-rollout feedback: the teacher sees what this rollout got wrong.

TRL's ``SDPOTrainer`` (experimental) reads feedback only from a fixed dataset column,
``privileged_context``, before any reward exists. Here the rubric reward runs first and leaves
each rollout's failed criteria (with the checks' or the judge's reasons) on the reward object;
the teacher-context builder below swaps them in for the static column. TRL's builder then
prefers a successful rollout of the same group (reward >= ``success_reward_threshold``) and
uses the feedback only when the group has none.
"""

from __future__ import annotations

from typing import Any

from trl.experimental.sdpo import SDPOTrainer
from trl.experimental.sdpo.sdpo_trainer import SuccessfulRolloutTeacherContextBuilder

from pipeline.train.reward import RubricReward


class FeedbackContextBuilder(SuccessfulRolloutTeacherContextBuilder):
    """TRL's builder, fed the reward's per-rollout feedback instead of a dataset column."""

    def __init__(self, trainer: Any, reward: RubricReward) -> None:
        super().__init__(trainer)
        self.reward = reward
        self.last_teacher_messages: list[Any] = []

    def build(
        self,
        output: dict[str, Any],
        prompts: list[Any],
        rewards: Any,
        feedbacks: list[Any] | None = None,
    ) -> dict[str, Any]:
        feedback = list(self.reward.last_feedback)
        if len(feedback) != len(prompts):  # not this batch's grades: never mix rollouts up
            raise RuntimeError(
                f"SDPO feedback for {len(feedback)} rollouts, batch has {len(prompts)}"
            )
        return super().build(output, prompts, rewards, feedbacks=feedback)

    def _tokenize_teacher_messages(self, teacher_messages_list: list[Any]) -> dict[str, Any]:
        self.last_teacher_messages = list(teacher_messages_list)  # what the teacher was shown
        return super()._tokenize_teacher_messages(teacher_messages_list)


class RubricSDPOTrainer(SDPOTrainer):
    """``SDPOTrainer`` whose teacher context comes from the rubric reward, per rollout."""

    def __init__(self, *args: Any, rubric: RubricReward, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.teacher_context_builder = FeedbackContextBuilder(self, rubric)

    def _record_completion_metrics(self, mode: str, batch: Any) -> None:
        """TRL's metrics, plus the tokens count GRPO keeps and SDPO (1.16) does not: every
        rollout's prompt and completion tokens, so tokens/s means the same in both stages."""
        super()._record_completion_metrics(mode, batch)
        if mode == "train":
            prompts = self.accelerator.gather(batch["prompt_mask"].sum(dim=1))
            completions = self.accelerator.gather(batch["raw_completion_lengths"])
            self.state.num_input_tokens_seen += int((prompts.sum() + completions.sum()).item())

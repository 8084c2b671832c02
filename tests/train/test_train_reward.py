"""The rubric reward: weights, the all-pass bonus, step statistics, and judge criteria graded
through a loopback judge double (verdicts, timeouts, the cache)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.eval.judge import Judge
from pipeline.eval.suite import Task
from pipeline.train.reward import CriterionGrade, RubricReward, feedback_text, rubric_reward
from tests.eval.helpers import LoopbackServer, ScriptedJudge
from uptake.settings import JudgeSettings


def crit(cid: str, check: dict[str, Any], weight: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": cid, "description": f"criterion {cid}", "check": check}
    if weight is not None:
        out["weight"] = weight
    return out


def make_task(task_id: str, criteria: list[dict[str, Any]], prompt: str = "Draft it.") -> Task:
    return Task.model_validate(
        {"id": task_id, "messages": [{"role": "user", "content": prompt}], "criteria": criteria}
    )


WEIGHTED = make_task(
    "w1",
    [
        crit("a", {"type": "contains", "value": "ALPHA"}, weight=3),
        crit("b", {"type": "contains", "value": "BETA"}),
    ],
)


def grade(passed: list[bool], weights: list[float]) -> list[CriterionGrade]:
    return [
        CriterionGrade(id=str(i), description="d", type="contains", weight=w, passed=p, reason="r")
        for i, (p, w) in enumerate(zip(passed, weights, strict=True))
    ]


def test_reward_is_the_weighted_fraction_plus_the_all_pass_bonus() -> None:
    assert rubric_reward(grade([True, False], [3, 1]), all_pass_bonus=0.2) == pytest.approx(0.75)
    assert rubric_reward(grade([False, True], [3, 1]), all_pass_bonus=0.2) == pytest.approx(0.25)
    assert rubric_reward(grade([True, True], [3, 1]), all_pass_bonus=0.2) == pytest.approx(1.2)
    assert rubric_reward(grade([True, True], [3, 1]), all_pass_bonus=0.0) == pytest.approx(1.0)
    assert rubric_reward(grade([False, False], [1, 1]), all_pass_bonus=0.5) == 0.0
    # equal weights: the plain fraction
    assert rubric_reward(grade([True, False, False], [1, 1, 1]), 0.2) == pytest.approx(1 / 3)


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def test_the_reward_function_grades_with_the_suite_checks_and_records_the_step() -> None:
    reward = RubricReward([WEIGHTED], all_pass_bonus=0.2, num_generations=2)
    answers = ["ALPHA and BETA", "only ALPHA", "only BETA", "nothing"]
    rewards = reward(
        prompts=[[]] * 4,
        completions=[chat(a) for a in answers],
        completion_ids=[[1, 2], [3], [4, 5, 6], [7]],
        task_id=["w1"] * 4,
        trainer_state=SimpleNamespace(global_step=4),
    )
    assert rewards == pytest.approx([1.2, 0.75, 0.25, 0.0])
    (stats,) = reward.series
    assert stats.step == 5 and stats.rollouts == 4 and stats.tokens_generated == 7
    assert stats.criterion_pass_rate == pytest.approx(4 / 8)
    assert stats.all_pass_rate == pytest.approx(1 / 4)
    assert stats.zero_spread_groups == 0.0
    assert stats.judge_calls == stats.judge_failures == 0
    # the feedback of a rollout lists exactly its failed criteria, with the check's reason
    assert reward.last_feedback[0] is None
    assert reward.last_feedback[1] == "- criterion b (missing 'BETA')"
    assert reward.last_feedback[3] is not None and reward.last_feedback[3].count("\n- ") == 1


def test_groups_with_equal_rewards_are_counted() -> None:
    reward = RubricReward([WEIGHTED], all_pass_bonus=0.2, num_generations=2)
    reward(
        prompts=[[]] * 4,
        completions=[chat(a) for a in ["x", "y", "ALPHA BETA", "BETA"]],
        task_id=["w1"] * 4,
    )
    assert reward.series[0].zero_spread_groups == 0.5  # the first pair both scored 0


def test_a_missing_task_id_column_is_a_clear_error() -> None:
    reward = RubricReward([WEIGHTED], all_pass_bonus=0.2, num_generations=2)
    with pytest.raises(ValueError, match="task_id column"):
        reward(prompts=[[]], completions=[chat("x")])


JUDGED = make_task(
    "j1",
    [
        crit("cites", {"type": "contains", "value": "INA"}),
        crit("explains", {"type": "judge"}),
    ],
    prompt="Explain the waiver standard.",
)


@pytest.fixture
def judge_server() -> Iterator[tuple[ScriptedJudge, str]]:
    judge = ScriptedJudge()
    with LoopbackServer(judge.app) as server:
        yield judge, f"{server.url}/v1"


def judge_for(url: str, cache: Path, **kw: Any) -> Judge:
    base: dict[str, Any] = {"base_url": url, "model": "judge-1", "timeout_s": 5.0, "max_retries": 0}
    return Judge(JudgeSettings(**{**base, **kw}), cache_dir=cache, backoff_s=0)


def test_judge_verdicts_become_rewards_and_their_reasons_feedback(
    judge_server: tuple[ScriptedJudge, str], tmp_path: Path
) -> None:
    server, url = judge_server

    def reply(body: dict[str, Any]) -> str:
        graded = body["messages"][-1]["content"]
        ok = "hardship" in graded
        return f'{{"pass": {str(ok).lower()}, "reason": "{"names" if ok else "no"} standard"}}'

    server.reply = reply
    with judge_for(url, tmp_path / "cache") as judge:
        reward = RubricReward([JUDGED], all_pass_bonus=0.2, num_generations=2, judge=judge)
        rewards = reward(
            prompts=[[]] * 2,
            completions=[chat("INA: extreme hardship"), chat("INA applies")],
            task_id=["j1", "j1"],
        )
    assert rewards == pytest.approx([1.2, 0.5])
    assert reward.series[0].judge_calls == 2 and reward.series[0].judge_cache_hits == 0
    assert reward.last_feedback[1] == "- criterion explains (no standard)"


def test_a_judge_that_times_out_gives_none_and_is_counted(
    judge_server: tuple[ScriptedJudge, str], tmp_path: Path
) -> None:
    server, url = judge_server
    server.script = [("sleep", 3.0, '{"pass": true, "reason": "late"}')]
    server.default = '{"pass": true, "reason": "fine"}'
    with judge_for(url, tmp_path / "cache", timeout_s=0.3) as judge:
        reward = RubricReward(
            [JUDGED], all_pass_bonus=0.2, num_generations=2, judge=judge, concurrency=1
        )
        rewards = reward(
            prompts=[[]] * 2, completions=[chat("INA one"), chat("INA two")], task_id=["j1"] * 2
        )
    assert rewards[0] is None and rewards[1] == pytest.approx(1.2)
    stats = reward.series[0]
    assert stats.judge_failures == 1 and stats.reward_mean == pytest.approx(1.2)
    assert stats.all_pass_rate == 1.0  # over the rollouts that could be graded
    assert reward.last_feedback[0] is None


def test_the_cache_avoids_a_second_call_for_the_same_answer(
    judge_server: tuple[ScriptedJudge, str], tmp_path: Path
) -> None:
    server, url = judge_server
    with judge_for(url, tmp_path / "cache") as judge:
        reward = RubricReward([JUDGED], all_pass_bonus=0.2, num_generations=2, judge=judge)
        reward(prompts=[[]] * 2, completions=[chat("INA same")] * 2, task_id=["j1"] * 2)
        reward(prompts=[[]] * 2, completions=[chat("INA same")] * 2, task_id=["j1"] * 2)
    calls = sum(s.judge_calls for s in reward.series)
    hits = sum(s.judge_cache_hits for s in reward.series)
    assert len(server.requests) == calls and calls <= 2  # two threads may race on the first
    assert calls + hits == 4 and reward.series[1].judge_cache_hits == 2


def test_feedback_is_none_for_an_ungraded_rollout() -> None:
    from pipeline.train.reward import RolloutGrade

    assert feedback_text(RolloutGrade(task_id="t", criteria=[], error="judge down")) is None

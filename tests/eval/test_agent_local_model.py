"""A tiny real model through the in-process engine completes the agent loop (its scores are
whatever they are: a random model cannot call tools, but the loop must not crash on it)."""

from __future__ import annotations

from pathlib import Path

from pipeline.eval import run_eval
from pipeline.eval.agent.lab import load_agentic_suite
from tests.eval.agent_helpers import copy_example, lab_verdict
from tests.eval.helpers import ScriptedJudge
from uptake.agent_config import AgentSettings
from uptake.settings import JudgeSettings


def test_a_tiny_local_model_completes_the_loop(
    lively_model: Path, judge_server: tuple[ScriptedJudge, str], tmp_path: Path
) -> None:
    judge, judge_url = judge_server
    judge.default = lab_verdict(False)
    suite = load_agentic_suite(copy_example(tmp_path, "litigation/limitation-check"))
    result = run_eval(
        lively_model,
        suite,
        judge=JudgeSettings(base_url=judge_url, model="judge"),
        agent=AgentSettings(max_turns=3, max_tokens_per_turn=24, concurrency=1),
        work_dir=tmp_path / "run",
        device="cpu",
        n_boot=100,
    )
    task = result.tasks[0]
    assert result.backend == "transformers" and task.n_criteria == 5
    stats = task.agent
    assert stats is not None and stats.turns >= 1
    assert stats.stop_reason in ("done", "turn_cap") and stats.error is None
    assert task.prompt_tokens > 0 and task.n_tokens > 0
    assert (tmp_path / "run" / str(stats.transcript)).is_file()
    assert not task.all_pass

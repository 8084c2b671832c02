"""A tiny real model through the in-process engine completes the agent loop (its scores are
whatever they are: a random model cannot call tools, but the loop must not crash on it)."""

from __future__ import annotations

import json
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


def test_a_local_model_that_calls_tools_goes_through_the_shared_parser(
    judge_server: tuple[ScriptedJudge, str], tmp_path: Path
) -> None:
    """The scripted tiny Llama of the serving tests always answers with a Hermes call to
    ``get_weather``: its own template renders our tools, ``uptake.models.tool_calls`` reads
    the call, the harness answers it with a tool error, and the turn cap ends the loop."""
    from tests.serving.scripted_model import build_scripted_model

    model_dir = build_scripted_model(tmp_path / "scripted")
    config = json.loads((model_dir / "config.json").read_text())
    config["max_position_embeddings"] = 8192  # the tools and instructions take ~2,400 tokens
    (model_dir / "config.json").write_text(json.dumps(config))
    judge, judge_url = judge_server
    suite = load_agentic_suite(copy_example(tmp_path, "litigation/limitation-check"))
    result = run_eval(
        model_dir,
        suite,
        judge=JudgeSettings(base_url=judge_url, model="judge"),
        agent=AgentSettings(max_turns=3, max_tokens_per_turn=16, concurrency=1),
        work_dir=tmp_path / "run",
        device="cpu",
        n_boot=100,
    )
    stats = result.tasks[0].agent
    assert stats is not None and stats.stop_reason == "turn_cap"
    assert (stats.turns, stats.tool_calls, stats.tool_errors) == (3, 3, 3)
    transcript = json.loads((tmp_path / "run" / str(stats.transcript)).read_text())
    call = transcript["messages"][2]["tool_calls"][0]["function"]
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}
    assert transcript["messages"][3]["content"].startswith("error: unknown tool 'get_weather'")
    assert judge.requests == []  # no file written and no final answer: every deliverable missing


def test_a_conversation_that_outgrows_the_local_model_ends_with_its_reason(
    judge_server: tuple[ScriptedJudge, str], tmp_path: Path
) -> None:
    from tests.serving.scripted_model import build_scripted_model

    model_dir = build_scripted_model(tmp_path / "scripted")  # 1,024 positions: too few
    _, judge_url = judge_server
    suite = load_agentic_suite(copy_example(tmp_path, "litigation/limitation-check"))
    result = run_eval(
        model_dir,
        suite,
        judge=JudgeSettings(base_url=judge_url, model="judge"),
        agent=AgentSettings(max_turns=3, max_tokens_per_turn=16, concurrency=1),
        work_dir=tmp_path / "run",
        device="cpu",
        n_boot=100,
    )
    stats = result.tasks[0].agent
    assert stats is not None and stats.stop_reason == "context_exceeded" and stats.turns == 1
    assert result.tasks[0].prompt_tokens > 1024 and result.tasks[0].n_tokens == 0

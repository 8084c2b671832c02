"""The agent loop end to end on loopback: a scripted OpenAI-compatible model (real HTTP, the
real ``openai`` client) works a LAB task; a scripted judge grades it per criterion."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.eval import run_eval
from pipeline.eval.agent.lab import load_agentic_suite
from pipeline.eval.agent.loop import AgentLimits
from pipeline.eval.agent.models import OpenAIChatModel
from pipeline.eval.agent.runner import run_agentic_eval
from tests.eval.agent_helpers import ScriptedAgent, Step, call, copy_example, lab_verdict
from tests.eval.helpers import LoopbackServer, ScriptedJudge
from uptake.agent_config import AgentSettings
from uptake.settings import JudgeSettings

PSA = "corporate/psa-term-sheet"
TERM_SHEET = (
    "# Term sheet\n\n- Buyer: Harbor Lane Holdings\n- Target: Cobalt Fabrication Ltd\n"
    "- Price: GBP 12,400,000 cash\n- Escrow: 10% (GBP 1,240,000) for 18 months\n"
    "- Long-stop date: 31 March 2026\n- Governing law: England and Wales\n"
    "- Missing consent: Dana Okafor (14%)\n"
)


def diligent(_: str) -> list[Step]:
    return [
        {
            "calls": [
                call("read", path="documents/draft-spa.docx"),
                call("read", path="documents/cap-table.xlsx"),
            ]
        },
        {"calls": [call("grep", pattern="long-stop|consent")]},
        {"calls": [call("write_docx", path="output/psa-term-sheet.docx", markdown=TERM_SHEET)]},
        {"content": "The term sheet is in output/psa-term-sheet.docx."},
    ]


@pytest.fixture
def agent_server() -> Iterator[tuple[ScriptedAgent, str]]:
    agent = ScriptedAgent(diligent)
    with LoopbackServer(agent.app) as server:
        yield agent, server.url


def judge_settings(url: str, **kw: Any) -> JudgeSettings:
    return JudgeSettings(base_url=url, model=kw.pop("model", "judge-a"), **kw)


def user_text(body: dict[str, Any]) -> str:
    return body["messages"][1]["content"]  # the grading request (a retry appends after it)


def test_a_scripted_agent_reads_greps_writes_and_is_graded_per_criterion(
    agent_server: tuple[ScriptedAgent, str],
    judge_server: tuple[ScriptedJudge, str],
    tmp_path: Path,
) -> None:
    agent, url = agent_server
    judge, judge_url = judge_server
    judge.default = lab_verdict(True)
    root = copy_example(tmp_path, PSA)
    suite = load_agentic_suite(root)
    result = run_eval(
        url,
        suite,
        judge=judge_settings(judge_url),
        agent=AgentSettings(max_turns=10),
        work_dir=tmp_path / "run",
        judge_cache_dir=tmp_path / "cache",
    )
    assert result.backend == "openai" and result.model == "scripted-agent"
    task = result.tasks[0]
    assert task.all_pass and task.n_criteria == 7
    stats = task.agent
    assert stats is not None
    assert (stats.turns, stats.tool_calls, stats.tool_errors) == (4, 4, 0)
    assert (stats.documents_read, stats.documents_present) == (2, 2)
    assert stats.deliverables == ["psa-term-sheet.docx"] and stats.stop_reason == "done"
    assert (task.prompt_tokens, task.n_tokens) == (400, 80)
    # the agent saw the instructions and the tools, never the rubric
    first = agent.requests[0]
    assert first["messages"][1] == {"role": "user", "content": suite.tasks[0].instructions}
    assert {t["function"]["name"] for t in first["tools"]} >= {
        "read",
        "glob",
        "grep",
        "write",
        "edit",
        "write_docx",
    }
    assert not any(
        "match_criteria" in json.dumps(r) or "PASS if" in json.dumps(r) for r in agent.requests
    )
    # tool results went back to the model: the converted xlsx is in the second request
    assert "Dana Okafor" in json.dumps(agent.requests[1]["messages"])
    # one judge call per criterion, with the deliverable's text and that criterion only
    assert len(judge.requests) == 7
    task_json = (root / "tasks" / PSA / "task.json").read_text()
    criteria = json.loads(task_json)["criteria"]
    for body, criterion in zip(
        sorted(judge.requests, key=lambda b: user_text(b).split("CRITERION: ")[1]),
        sorted(criteria, key=lambda c: c["title"]),
        strict=True,
    ):
        text = user_text(body)
        assert body["temperature"] == 0
        assert "Buyer: Harbor Lane Holdings" in text and "Dana Okafor (14%)" in text
        assert criterion["match_criteria"] in text and f"CRITERION: {criterion['title']}" in text
        others = [c["match_criteria"] for c in criteria if c is not criterion]
        assert not any(o in text for o in others)
        assert '"criteria"' not in text and task_json not in text
    # the transcript: OpenAI-shaped messages with tools and timings, ready for SFT
    transcript = json.loads((tmp_path / "run" / stats.transcript).read_text())
    roles = [m["role"] for m in transcript["messages"]]
    assert roles == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]
    assert transcript["messages"][2]["tool_calls"][0]["function"]["name"] == "read"
    assert len(transcript["turns"]) == 4 and len(transcript["tool_events"]) == 4
    assert all(e["seconds"] >= 0 for e in transcript["tool_events"])
    summary = result.summary()["agent"]
    assert summary["documents_read"] == 2 and summary["deliverables_produced"] == 1
    assert summary["judge_errors"] == 0


def run(
    agent_url: str, root: Path, judges: list[JudgeSettings], tmp_path: Path, **kw: Any
):  # -> EvalResult
    model = OpenAIChatModel(agent_url)
    try:
        return run_agentic_eval(
            model, load_agentic_suite(root), judges, tmp_path / "run", n_boot=100, **kw
        )
    finally:
        model.close()


def served(script: Any, sleep_s: float = 0.0) -> tuple[ScriptedAgent, LoopbackServer]:
    agent = ScriptedAgent(script, sleep_s=sleep_s)
    return agent, LoopbackServer(agent.app)


def run_scripted(
    script: Any, judge_url: str, tmp_path: Path, sleep_s: float = 0.0, **kw: Any
) -> tuple[ScriptedAgent, Any]:
    """``script`` served as the agent, working the PSA task once under one judge."""
    agent, server = served(script, sleep_s)
    with server:
        root = copy_example(tmp_path, PSA)
        return agent, run(server.url, root, [judge_settings(judge_url)], tmp_path, **kw)


def test_the_turn_cap_ends_a_runaway_agent_and_its_partial_output_is_graded(
    judge_server: tuple[ScriptedJudge, str], tmp_path: Path
) -> None:
    judge, judge_url = judge_server
    judge.default = lab_verdict(False)

    def runaway(_: str) -> list[Step]:
        first = {"calls": [call("write", path="output/PSA Term Sheet.md", content="draft")]}
        return [first] + [{"calls": [call("glob", pattern="**/*")]}] * 100

    agent, result = run_scripted(runaway, judge_url, tmp_path, limits=AgentLimits(max_turns=3))
    stats = result.tasks[0].agent
    assert stats is not None and stats.stop_reason == "turn_cap" and stats.turns == 3
    assert len(agent.requests) == 3
    assert len(judge.requests) == 7  # the partial deliverable (matched by its stem) was judged
    assert "draft" in user_text(judge.requests[0])


def test_the_deadline_ends_a_slow_agent(
    judge_server: tuple[ScriptedJudge, str], tmp_path: Path
) -> None:
    _, judge_url = judge_server

    def endless(_: str) -> list[Step]:
        return [{"calls": [call("glob", pattern="*")]}] * 100

    _, result = run_scripted(
        endless, judge_url, tmp_path, sleep_s=0.4, limits=AgentLimits(deadline_s=1.0)
    )
    stats = result.tasks[0].agent
    assert stats is not None and stats.stop_reason == "deadline"
    assert 1 <= stats.turns <= 4 and stats.wall_seconds < 5
    assert not result.tasks[0].all_pass


def test_a_missing_deliverable_fails_without_a_judge_call(
    judge_server: tuple[ScriptedJudge, str], tmp_path: Path
) -> None:
    judge, judge_url = judge_server

    def wrong_file(_: str) -> list[Step]:
        return [{"calls": [call("write", path="output/notes.md", content="notes")]}]

    _, result = run_scripted(wrong_file, judge_url, tmp_path)
    assert judge.requests == []
    assert all(
        not c.passed and c.reason == "missing deliverable: psa-term-sheet.docx"
        for c in result.tasks[0].criteria
    )
    assert result.metrics.criteria_judge_error == 0


def test_a_model_that_answers_without_tools_is_graded_on_what_it_wrote(
    judge_server: tuple[ScriptedJudge, str], tmp_path: Path
) -> None:
    judge, judge_url = judge_server
    judge.default = lab_verdict(True)

    def talker(_: str) -> list[Step]:
        return [{"content": "Buyer: Harbor Lane Holdings; price GBP 12,400,000."}]

    _, result = run_scripted(talker, judge_url, tmp_path)
    assert len(judge.requests) == 7
    assert "price GBP 12,400,000" in user_text(judge.requests[0])
    assert result.tasks[0].agent is not None and result.tasks[0].agent.turns == 1


def test_judge_errors_are_counted_apart_from_fails(
    agent_server: tuple[ScriptedAgent, str],
    judge_server: tuple[ScriptedJudge, str],
    tmp_path: Path,
) -> None:
    _, url = agent_server
    judge, judge_url = judge_server
    judge.reply = lambda body: (
        "no idea"
        if "CRITERION: Escrow" in user_text(body)
        else lab_verdict("CRITERION: Governing law" not in user_text(body))
    )
    result = run(
        url, copy_example(tmp_path, PSA), [judge_settings(judge_url, max_retries=1)], tmp_path
    )
    by_id = {c.description: c for c in result.tasks[0].criteria}
    assert by_id["Escrow"].judge_error and not by_id["Escrow"].passed
    assert "judge error" in by_id["Escrow"].reason
    assert not by_id["Governing law"].judge_error and not by_id["Governing law"].passed
    assert result.metrics.criteria_judge_error == 1
    assert result.metrics.n_criteria_passed == 5
    assert result.summary()["agent"]["judge_errors"] == 1


def test_two_judges_rates_agreement_and_dual_all_pass(
    agent_server: tuple[ScriptedAgent, str], tmp_path: Path
) -> None:
    _, url = agent_server
    judge_a, judge_b = ScriptedJudge(), ScriptedJudge()
    judge_a.default = lab_verdict(True)
    judge_b.reply = lambda body: lab_verdict("CRITERION: Governing law" not in user_text(body))
    with LoopbackServer(judge_a.app) as a, LoopbackServer(judge_b.app) as b:
        result = run(
            url,
            copy_example(tmp_path, PSA),
            [
                judge_settings(f"{a.url}/v1", model="judge-a"),
                judge_settings(f"{b.url}/v1", model="judge-b"),
            ],
            tmp_path,
        )
    assert len(judge_a.requests) == len(judge_b.requests) == 7
    law = next(c for c in result.tasks[0].criteria if c.description == "Governing law")
    assert law.verdicts == {"judge-a": True, "judge-b": False} and not law.passed
    assert result.metrics.all_pass_rate == 0.0  # dual: a criterion passes only if both say so
    summary = result.summary()["agent"]
    assert summary["judges"]["judge-a"]["all_pass_rate"] == 1.0
    assert summary["judges"]["judge-b"]["criterion_pass_rate"] == pytest.approx(6 / 7)
    assert summary["judge_agreement"] == pytest.approx(6 / 7)
    assert result.judges == ["judge-a", "judge-b"]


def test_tasks_run_concurrently_and_a_rerun_hits_the_judge_cache(
    judge_server: tuple[ScriptedJudge, str], tmp_path: Path
) -> None:
    judge, judge_url = judge_server
    judge.default = lab_verdict(True)

    def quick(instructions: str) -> list[Step]:
        return [{"calls": [call("glob", pattern="documents/*")]}, {"content": "done"}]

    root = copy_example(tmp_path)
    agent, server = served(quick, sleep_s=0.3)
    with server:
        first = run(
            server.url,
            root,
            [judge_settings(judge_url)],
            tmp_path,
            concurrency=4,
            judge_cache_dir=tmp_path / "cache",
        )
        calls = len(judge.requests)
        again = run(
            server.url,
            root,
            [judge_settings(judge_url)],
            tmp_path,
            concurrency=4,
            judge_cache_dir=tmp_path / "cache",
        )
    assert agent.max_in_flight >= 2
    assert first.metrics.n_tasks == 4 and calls == 26  # the final answers, judged once each
    assert len(judge.requests) == calls  # the rerun was answered from the cache
    assert again.metrics.all_pass_rate == first.metrics.all_pass_rate


def test_the_token_budget_ends_the_loop(
    judge_server: tuple[ScriptedJudge, str], tmp_path: Path
) -> None:
    _, judge_url = judge_server

    def endless(_: str) -> list[Step]:
        return [{"calls": [call("glob", pattern="*")]}] * 100

    agent, result = run_scripted(
        endless, judge_url, tmp_path, limits=AgentLimits(token_budget=250)
    )  # each turn costs 100 in + 20 out
    stats = result.tasks[0].agent
    assert stats is not None and stats.stop_reason == "token_budget" and stats.turns == 3
    assert agent.requests[-1]["max_tokens"] == 10  # the last turn got what the budget left


def test_a_failing_model_endpoint_ends_the_task_not_the_run(
    judge_server: tuple[ScriptedJudge, str], tmp_path: Path
) -> None:
    judge, judge_url = judge_server
    broken = ScriptedJudge()
    broken.default = ("status", 400)
    with LoopbackServer(broken.app) as server:
        model = OpenAIChatModel(server.url, model="broken", max_retries=0)
        result = run_agentic_eval(
            model,
            load_agentic_suite(copy_example(tmp_path, PSA)),
            [judge_settings(judge_url)],
            tmp_path / "run",
            n_boot=100,
        )
    stats = result.tasks[0].agent
    assert stats is not None and stats.stop_reason == "model_error"
    assert stats.error is not None and "400" in stats.error
    assert judge.requests == []  # nothing written, nothing said: every deliverable missing
    assert result.metrics.n_criteria_passed == 0


def test_uptake_eval_runs_an_agentic_suite_from_the_command_line(
    agent_server: tuple[ScriptedAgent, str],
    judge_server: tuple[ScriptedJudge, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from uptake.cli import build_app

    _, url = agent_server
    judge, judge_url = judge_server
    judge.default = lab_verdict(True)
    monkeypatch.setenv("UPTAKE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("UPTAKE_AGENT__MAX_TURNS", "8")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        build_app(),
        [
            "eval",
            "--model",
            url,
            "--suite",
            str(copy_example(tmp_path, PSA)),
            "--out",
            str(out),
            "--judge-base-url",
            judge_url,
            "--judge-model",
            "judge-a",
            "--json",
            "--bootstrap",
            "100",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["all_pass_rate"] == 1.0 and summary["agent"]["turns_mean"] == 4.0
    assert (out / "transcripts").is_dir() and len(list((out / "transcripts").iterdir())) == 1
    report = (out / "report.md").read_text()
    assert "## Agent" in report and "(transcripts/" in report


def test_two_judges_serving_one_model_name_keep_their_own_verdicts(
    agent_server: tuple[ScriptedAgent, str], tmp_path: Path
) -> None:
    _, url = agent_server
    judge_a, judge_b = ScriptedJudge(), ScriptedJudge()
    judge_a.default, judge_b.default = lab_verdict(True), lab_verdict(False)
    with LoopbackServer(judge_a.app) as a, LoopbackServer(judge_b.app) as b:
        result = run(
            url,
            copy_example(tmp_path, PSA),
            [
                judge_settings(f"{a.url}/v1", model="same"),
                judge_settings(f"{b.url}/v1", model="same"),
            ],
            tmp_path,
        )
    assert {r["model"] for r in judge_a.requests + judge_b.requests} == {"same"}
    assert result.judges == ["same", "same#2"]
    assert result.tasks[0].criteria[0].verdicts == {"same": True, "same#2": False}

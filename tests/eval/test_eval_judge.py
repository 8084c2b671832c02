"""The LLM judge against a loopback OpenAI-compatible server with scripted replies."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from pipeline.eval import load_suite, run_eval
from pipeline.eval.judge import (
    CORRECTION,
    MAX_RESPONSE_BYTES,
    Judge,
    JudgeError,
    parse_verdict,
)
from pipeline.eval.suite import Criterion, Task
from tests.core.http_servers import HostileServer
from tests.eval.helpers import ScriptedJudge, task, write_suite
from uptake.errors import InputError
from uptake.settings import JudgeSettings

VALID = '{"pass": true, "reason": "names the waiver standard"}'
TASK = Task.model_validate(
    task(
        "imm-1",
        prompt="Explain the waiver standard.",
        criteria=[
            {"id": "c4", "description": "Explains the waiver standard", "check": {"type": "judge"}}
        ],
    )
)
CRITERION: Criterion = TASK.criteria[0]


def settings(url: str, **kw: object) -> JudgeSettings:
    base = {"base_url": url, "model": "judge-1", "timeout_s": 5.0, "max_retries": 2}
    return JudgeSettings(**{**base, **kw})


def test_valid_verdict(judge_server: tuple[ScriptedJudge, str]) -> None:
    server, url = judge_server
    server.script = [VALID]
    with Judge(settings(url, api_key=SecretStr("k-123"))) as judge:
        verdict = judge.grade(TASK, CRITERION, "The extreme hardship standard applies.")
    assert verdict.passed is True and verdict.reason == "names the waiver standard"
    (body,) = server.requests
    assert body["model"] == "judge-1" and body["temperature"] == 0
    prompt = body["messages"][-1]["content"]
    assert "Explains the waiver standard" in prompt
    assert "The extreme hardship standard applies." in prompt
    assert "Explain the waiver standard." in prompt  # the task itself


def test_failing_verdict(judge_server: tuple[ScriptedJudge, str]) -> None:
    server, url = judge_server
    server.script = ['{"pass": false, "reason": "no standard named"}']
    with Judge(settings(url)) as judge:
        verdict = judge.grade(TASK, CRITERION, "Call us.")
    assert verdict.passed is False and verdict.reason == "no standard named"


def test_malformed_then_valid(judge_server: tuple[ScriptedJudge, str]) -> None:
    server, url = judge_server
    server.script = ["Sure! It passes.", '{"pass": "yes", "reason": "x"}', VALID]
    with Judge(settings(url, max_retries=2), backoff_s=0) as judge:
        verdict = judge.grade(TASK, CRITERION, "resp")
    assert verdict.passed is True
    assert len(server.requests) == 3
    second = server.requests[1]["messages"]
    assert second[-2] == {"role": "assistant", "content": "Sure! It passes."}
    assert second[-1] == {"role": "user", "content": CORRECTION}


def test_malformed_until_retries_run_out(judge_server: tuple[ScriptedJudge, str]) -> None:
    server, url = judge_server
    server.default = "PASS"
    with (
        Judge(settings(url, max_retries=1), backoff_s=0) as judge,
        pytest.raises(JudgeError) as info,
    ):
        judge.grade(TASK, CRITERION, "resp")
    assert "after 2 attempt(s)" in str(info.value) and "malformed verdict 'PASS'" in str(info.value)
    assert len(server.requests) == 2


def test_timeout_fails_fast(judge_server: tuple[ScriptedJudge, str]) -> None:
    server, url = judge_server
    server.script = [("sleep", 3.0, VALID)]
    start = time.monotonic()
    with (
        Judge(settings(url, timeout_s=0.3, max_retries=0)) as judge,
        pytest.raises(JudgeError) as info,
    ):
        judge.grade(TASK, CRITERION, "resp")
    assert "timed out after 0.3s" in str(info.value)
    assert time.monotonic() - start < 2.5


def test_timeout_then_valid(judge_server: tuple[ScriptedJudge, str]) -> None:
    server, url = judge_server
    server.script = [("sleep", 2.0, VALID), VALID]
    with Judge(settings(url, timeout_s=0.3, max_retries=1), backoff_s=0) as judge:
        assert judge.grade(TASK, CRITERION, "resp").passed


def test_server_error_is_retried_client_error_is_not(
    judge_server: tuple[ScriptedJudge, str],
) -> None:
    server, url = judge_server
    server.script = [("status", 503), VALID]
    with Judge(settings(url), backoff_s=0) as judge:
        assert judge.grade(TASK, CRITERION, "resp").passed
    server.requests.clear()
    server.script = [("status", 401), VALID]
    with Judge(settings(url), backoff_s=0) as judge, pytest.raises(JudgeError, match="HTTP 401"):
        judge.grade(TASK, CRITERION, "resp")
    assert len(server.requests) == 1


def test_cache_by_model_criterion_and_response(
    judge_server: tuple[ScriptedJudge, str], tmp_path: Path
) -> None:
    server, url = judge_server
    cache = tmp_path / "cache"
    with Judge(settings(url), cache_dir=cache) as judge:
        judge.grade(TASK, CRITERION, "response A")
        judge.grade(TASK, CRITERION, "response A")
        assert len(server.requests) == 1
        judge.grade(TASK, CRITERION, "response B")
        assert len(server.requests) == 2
        other = CRITERION.model_copy(update={"description": "Cites the statute"})
        judge.grade(TASK, other, "response A")
        assert len(server.requests) == 3
    server.default = '{"pass": false, "reason": "changed"}'
    with Judge(settings(url), cache_dir=cache) as judge:  # the cache is on disk
        assert judge.grade(TASK, CRITERION, "response A").passed is True
        assert len(server.requests) == 3
    with Judge(settings(url, model="judge-2"), cache_dir=cache) as judge:
        assert judge.grade(TASK, CRITERION, "response A").passed is False
        assert len(server.requests) == 4
    other_endpoint = url.replace("127.0.0.1", "localhost")  # another judge, same model name
    with Judge(settings(other_endpoint, model="judge-2"), cache_dir=cache) as judge:
        judge.grade(TASK, CRITERION, "response A")
        assert len(server.requests) == 5
    assert len(list(cache.rglob("*.json"))) == 5


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ('{"pass": true, "reason": "ok"}', True),
        ('```json\n{"pass": false, "reason": "ok"}\n```', True),
        ('{"pass": "true", "reason": "ok"}', False),  # a string is not a boolean
        ('{"pass": 1, "reason": "ok"}', False),
        ('{"pass": true}', False),
        ('{"pass": true, "reason": "ok", "score": 3}', False),
        ('The verdict: {"pass": true, "reason": "ok"}', False),
        ("[true]", False),
    ],
)
def test_verdict_is_strict(text: str, ok: bool) -> None:
    assert (parse_verdict(text) is not None) is ok


def test_judge_criteria_without_judge_fail_before_generating(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path / "s.jsonl", [task(criteria=[CRITERION.model_dump()])]))
    # The model directory does not exist: the judge error must come first.
    with pytest.raises(InputError, match="1 judge criteria but no judge is configured"):
        run_eval(tmp_path / "no-model", suite)
    with pytest.raises(InputError, match="no judge is configured"):
        run_eval(tmp_path / "no-model", suite, judge=JudgeSettings(base_url="http://x"))


def test_run_eval_with_judge(
    judge_server: tuple[ScriptedJudge, str], lively_backend, tmp_path: Path
) -> None:
    server, url = judge_server

    def reply(body: dict) -> str:
        prompt = body["messages"][-1]["content"]
        ok = "CRITERION: Is polite" in prompt
        return f'{{"pass": {str(ok).lower()}, "reason": "judged {ok}"}}'

    server.reply = reply
    criteria = [
        {"id": "c1", "description": "Is polite", "check": {"type": "judge"}},
        {
            "id": "c2",
            "description": "Is wise",
            "check": {"type": "judge", "instructions": "Be strict."},
        },
        {
            "id": "c3",
            "description": "No overclaim",
            "check": {"type": "not_contains", "value": "guarantee"},
        },
    ]
    suite = load_suite(
        write_suite(
            tmp_path / "s.jsonl",
            [task(f"t{i}", criteria=criteria, prompt=f"Question {i}?") for i in range(3)],
        )
    )
    result = run_eval(
        lively_backend,
        suite,
        max_new_tokens=6,
        judge=settings(url),
        judge_cache_dir=tmp_path / "cache",
    )
    assert len(server.requests) == 6  # 3 tasks x 2 judge criteria
    assert any("GRADING NOTES: Be strict." in r["messages"][-1]["content"] for r in server.requests)
    for t in result.tasks:
        verdicts = {c.id: (c.passed, c.reason) for c in t.criteria}
        assert verdicts["c1"] == (True, "judged True")
        assert verdicts["c2"] == (False, "judged False")
        assert verdicts["c3"][0] is True
    assert result.metrics.criterion_pass_rate == pytest.approx(2 / 3)
    assert result.metrics.all_pass_rate == 0.0
    # Re-grading the same responses is served from the cache.
    run_eval(
        lively_backend,
        suite,
        max_new_tokens=6,
        judge=settings(url),
        judge_cache_dir=tmp_path / "cache",
    )
    assert len(server.requests) == 6


def test_a_judge_that_drips_its_answer_fails_at_the_deadline() -> None:
    # one byte every 0.2 s for 6 s: each read is quick, so only a total deadline stops it
    with HostileServer("drip_body", drip_bytes=30) as server:
        start = time.monotonic()
        with (
            Judge(
                settings(f"http://127.0.0.1:{server.port}/v1", timeout_s=1.0, max_retries=1),
                backoff_s=0,
            ) as judge,
            pytest.raises(JudgeError) as info,
        ):
            judge.grade(TASK, CRITERION, "resp")
    assert time.monotonic() - start < 4.0  # two attempts of 1 s each
    assert "timed out after 1s" in str(info.value) and server.requests == 2


def test_a_judge_that_floods_its_answer_is_refused() -> None:
    with (
        HostileServer("flood", flood_bytes=20 << 20) as server,
        Judge(settings(f"http://127.0.0.1:{server.port}/v1"), backoff_s=0) as judge,
        pytest.raises(JudgeError, match="answered too much") as info,
    ):
        judge.grade(TASK, CRITERION, "resp")
    assert f"limit {MAX_RESPONSE_BYTES} bytes" in str(info.value)
    # not retried; no bound on server.sent: loopback receive buffers (tcp_rmem up to 32 MiB)
    # may take much of the body although the judge stops reading at the cap
    assert server.requests == 1

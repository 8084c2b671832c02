"""``run_eval`` is library code: it takes what it needs as arguments and never loads the
global settings (the worker calls it with its own; a broken UPTAKE_CONFIG is not its concern)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.eval import load_suite, run_eval
from tests.eval.helpers import ScriptedJudge, task, write_suite
from uptake.settings import JudgeSettings

VERDICT = '{"pass": true, "reason": "polite"}'


def test_run_eval_with_a_judge_ignores_the_environment_config(
    judge_server: tuple[ScriptedJudge, str],
    lively_backend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, url = judge_server
    server.reply = lambda body: VERDICT
    monkeypatch.setenv("UPTAKE_CONFIG", str(tmp_path / "absent.yaml"))  # load_settings() fails
    monkeypatch.setenv("UPTAKE_HOME", str(tmp_path / "home"))
    criteria = [{"id": "c1", "description": "Is polite", "check": {"type": "judge"}}]
    suite = load_suite(write_suite(tmp_path / "s.jsonl", [task("t1", criteria=criteria)]))
    judge = JudgeSettings(base_url=url, model="judge-1", timeout_s=5.0)
    for _ in range(2):  # no cache directory given: nothing cached, nothing written
        result = run_eval(lively_backend, suite, max_new_tokens=4, judge=judge)
        assert result.tasks[0].criteria[0].passed is True
    assert len(server.requests) == 2
    assert not (tmp_path / "home").exists()

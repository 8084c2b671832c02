"""An agentic evaluation logged to the real test MLflow server: agent metrics, the judges and
the sandbox as tags, one transcript per task, and a report that links them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.eval import load_results, log_to_mlflow, save_results
from pipeline.eval.agent.lab import load_agentic_suite
from pipeline.eval.agent.models import OpenAIChatModel
from pipeline.eval.agent.runner import run_agentic_eval
from pipeline.eval.report import render_markdown
from tests.eval.agent_helpers import ScriptedAgent, Step, call, copy_example, lab_verdict
from tests.eval.helpers import LoopbackServer, ScriptedJudge
from uptake.mlflow_contract import (
    AGENT_DOCUMENTS_READ_RATE,
    AGENT_TURNS_MEAN,
    JUDGE_ERRORS,
    JUDGES_TAG,
    SUITE_SHA_TAG,
    TRANSCRIPTS_ARTIFACT_DIR,
)
from uptake.settings import JudgeSettings

# what this module tests does not depend on the MLflow store: one store (README "Tests")
pytestmark = pytest.mark.one_backend


def reader(_: str) -> list[Step]:
    return [
        {"calls": [call("glob", pattern="documents/*")]},
        {"calls": [call("read", path="documents/invoices.xlsx")]},
        {"calls": [call("write_docx", path="output/limitation-note.docx", markdown="INV-101")]},
        {"content": "done"},
    ]


@pytest.fixture
def tracking(mlflow_server) -> Iterator[str]:
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server.tracking_uri)
    mlflow.set_experiment(f"agent-test-{uuid.uuid4().hex[:8]}")
    try:
        yield mlflow_server.tracking_uri
    finally:
        mlflow.set_tracking_uri(previous)


def test_an_agentic_run_logs_stats_transcripts_and_a_linked_report(
    tracking: str, judge_server: tuple[ScriptedJudge, str], tmp_path: Path
) -> None:
    import mlflow

    judge, judge_url = judge_server
    judge.default = lab_verdict(True)
    suite = load_agentic_suite(copy_example(tmp_path, "litigation/limitation-check"))
    agent = ScriptedAgent(reader)
    with LoopbackServer(agent.app) as server:
        model = OpenAIChatModel(server.url)
        result = run_agentic_eval(
            model,
            suite,
            [JudgeSettings(base_url=judge_url, model="judge-a")],
            tmp_path / "run",
            n_boot=100,
        )
        model.close()
    with mlflow.start_run() as run:
        logged = log_to_mlflow(result)
    client = mlflow.MlflowClient()
    stored = client.get_run(run.info.run_id)
    assert stored.data.metrics[AGENT_TURNS_MEAN] == 4.0
    assert stored.data.metrics[AGENT_DOCUMENTS_READ_RATE] == 0.5  # 1 of 2 documents
    assert stored.data.metrics[JUDGE_ERRORS] == 0.0 and logged[AGENT_TURNS_MEAN] == 4.0
    assert stored.data.tags[JUDGES_TAG] == "judge-a"
    assert stored.data.tags[SUITE_SHA_TAG] == suite.sha256
    transcripts = [a.path for a in client.list_artifacts(run.info.run_id, TRANSCRIPTS_ARTIFACT_DIR)]
    stats = result.tasks[0].agent
    assert stats is not None and transcripts == [f"eval/{stats.transcript}"]
    local = client.download_artifacts(run.info.run_id, f"eval/{stats.transcript}")
    assert json.loads(Path(local).read_text())["stop_reason"] == "done"
    report = Path(client.download_artifacts(run.info.run_id, "eval/report.md")).read_text()
    assert "## Agent" in report and f"[json]({stats.transcript})" in report
    assert "| litigation/limitation-check | 100.0% | 4 | 3 | 1/2 | 1/1 |" in report
    # the agent stats travel in the results file (what the registry and --baseline read)
    save_results(result, tmp_path / "results.jsonl")
    again = load_results(tmp_path / "results.jsonl")
    assert again.tasks[0].agent == stats
    assert "## Agent" in render_markdown(again)

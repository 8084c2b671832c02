"""An agentic track through the worker: the base model and the post-trained one each work the
LAB-format example suite through the harness (in-process engine), graded by a judge double;
the version is registered with the suite's content hash and the agent's statistics."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from pipeline.eval.suites import suite_sha256
from pipeline.worker.job import run_job
from registry.mlflow_registry import Registry
from registry.report.gather import gather_version
from registry.report.render import render_html, render_markdown
from tests.eval.agent_helpers import EXAMPLE, lab_verdict
from tests.eval.helpers import LoopbackServer, ScriptedJudge
from tests.worker.helpers import build_release_dir, dir_release, job_spec, make_track
from uptake.agent_config import AgentSettings
from uptake.demo.config import CPU_HOUR_USD
from uptake.mlflow_contract import (
    AGENT_TURNS_MEAN,
    ALL_PASS_RATE,
    BASELINE_PREFIX,
    JUDGES_TAG,
    N_TASKS,
    SUITE_SHA_TAG,
    TRANSCRIPTS_ARTIFACT_DIR,
)

pytestmark = [pytest.mark.slow, pytest.mark.one_backend]


@pytest.fixture(scope="module")
def judge() -> Iterator[tuple[ScriptedJudge, str]]:
    double = ScriptedJudge()
    double.default = lab_verdict(False, "a random model's answer")
    with LoopbackServer(double.app) as server:
        yield double, f"{server.url}/v1"


@pytest.fixture(scope="module")
def adopted(stack, drops: Path, unique, judge, tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("agentic-tracks")
    suite = root / "legal-agentic"
    shutil.copytree(EXAMPLE / "tasks", suite / "tasks")
    repo = f"acme/{unique('agentic')}"
    build_release_dir(drops, repo)
    track = make_track(root, "agentic", unique("uptake-agentic"), suite_path=suite)
    spec = job_spec(
        stack,
        dir_release(drops, repo),
        track,
        judge_base_url=judge[1],
        judge_model="judge-double",
        agent=AgentSettings(max_turns=2, max_tokens_per_turn=12, concurrency=2),
        cpu_hour_price=CPU_HOUR_USD,
    )
    return {"spec": spec, "outcome": run_job(spec), "suite": suite}


def test_an_agentic_track_registers_a_version_scored_by_the_harness(stack, adopted, judge) -> None:
    assert adopted["outcome"].ok, adopted["outcome"]
    spec = adopted["spec"]
    c = MlflowClient(tracking_uri=stack.tracking_uri, registry_uri=stack.tracking_uri)
    (mv,) = c.search_model_versions(f"name = '{spec.track.registered_model}'")
    assert mv.tags[SUITE_SHA_TAG] == suite_sha256(adopted["suite"])
    run = c.get_run(mv.run_id)
    metrics, tags = run.data.metrics, run.data.tags
    assert metrics[N_TASKS] == 4 and tags[JUDGES_TAG] == "judge-double"
    for prefix in ("", BASELINE_PREFIX):
        assert metrics[prefix + ALL_PASS_RATE] == 0.0  # the judge double fails everything
        assert 1 <= metrics[prefix + AGENT_TURNS_MEAN] <= 2
    transcripts = c.list_artifacts(mv.run_id, TRANSCRIPTS_ARTIFACT_DIR)
    assert len(transcripts) == 4
    baseline = c.list_artifacts(mv.run_id, "eval/baseline_transcripts")
    assert len(baseline) == 4
    double, _ = judge
    assert double.requests  # graded through the judge (a model with no file: its final answer)
    assert all("task.json" not in str(r) for r in double.requests)


def test_the_adoption_report_shows_agent_statistics_and_links_transcripts(stack, adopted) -> None:
    import httpx

    spec = adopted["spec"]
    report = gather_version(Registry(stack.tracking_uri), spec.track.registered_model)
    assert [a.task_id for a in report.agent_tasks] == [
        "corporate/nda-review",
        "corporate/psa-term-sheet",
        "employment/severance-calc",
        "litigation/limitation-check",
    ]
    task = report.agent_tasks[0]
    assert task.documents_present == 3 and task.deliverables_expected == 1
    assert task.transcript is not None
    fetched = httpx.get(task.transcript, timeout=30)  # the link opens the transcript itself
    assert fetched.status_code == 200 and fetched.json()["task_id"] == "corporate/nda-review"
    markdown = render_markdown(report, {})
    assert "## Agent (post-trained model, per task)" in markdown
    assert f"[transcript]({task.transcript})" in markdown
    assert 'href="' in render_html(report, {}) and ">transcript</a>" in render_html(report, {})
    # the quality-cost chart's points: base and candidate, each priced per task
    kinds = {p.kind: p for p in report.cost_points}
    assert {"base", "candidate"} <= set(kinds)
    assert all(kinds[k].cost_per_task is not None for k in ("base", "candidate"))

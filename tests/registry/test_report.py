"""``uptake report`` on a real MLflow server: versions registered as the worker does, decided
by the promoter's own code (``handle_candidate``), timeline tags written as the worker and
serving write them; then the HTML page, its Markdown twin and the MLflow artifacts."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag

from registry.decision_flow import handle_candidate
from registry.mlflow_registry import Registry
from registry.report.gather import gather_version, summary_rows
from registry.report.model import ReportError
from registry.report.render import summary_markdown
from registry.report.write import write_all, write_version
from registry.service import make_context
from tests.conftest import MlflowServer
from tests.registry.conftest import configure
from tests.registry.helpers import GOOD, SPIKY, Worker
from uptake.cli import main
from uptake.cost import Price
from uptake.mlflow_contract import (
    COST_PER_TASK,
    DETECTED_AT_TAG,
    EVAL_MODEL_TAG,
    GENERATION_SECONDS,
    RELEASE_CREATED_AT_TAG,
    SERVED_AT_TAG,
    SUITE_SHA_TAG,
    TOKENS_IN,
    TOKENS_OUT,
    WORKER_STAGES,
    stage_time_tag,
)
from uptake.settings import Settings

# what this module tests does not depend on the MLflow store: one store (README "Tests")
pytestmark = pytest.mark.one_backend

SUITE = "s" * 64
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)  # released 10 min ago
TIMELINE = ["release created", "detected", *WORKER_STAGES, "decided", "serving swapped"]


def iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


@dataclass
class Adoptions:
    server: MlflowServer
    model: str
    v1_run: str
    v2_run: str
    release_v1: str
    external_run: str


def _log(
    client: MlflowClient, run_id: str, metrics: dict[str, float], tags: dict[str, str]
) -> None:
    now = int(datetime.now(UTC).timestamp() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )


@pytest.fixture(scope="module")
def adoptions(
    mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Adoptions]:
    model = f"uptake-report-{uuid.uuid4().hex[:8]}"
    home = tmp_path_factory.mktemp("report-home")
    s = configure(Settings(home=home, mlflow_tracking_uri=mlflow_server.tracking_uri), model=model)
    worker = Worker(mlflow_server.tracking_uri)
    client = worker.client
    ctx = make_context(s, None)

    v1 = worker.register(model, GOOD)
    # the worker's timeline: release created, detected, then each stage a minute apart
    tags = {RELEASE_CREATED_AT_TAG: iso(T0), DETECTED_AT_TAG: iso(T0 + timedelta(seconds=30))}
    for i, stage in enumerate(WORKER_STAGES):
        tags[stage_time_tag(stage, "started")] = iso(T0 + timedelta(minutes=1 + i))
        tags[stage_time_tag(stage, "ended")] = iso(T0 + timedelta(minutes=1 + i, seconds=50))
    # what the eval engine logs for cost (tokens and generation time, candidate and base)
    cost = {TOKENS_IN: 1000.0, TOKENS_OUT: 500.0, GENERATION_SECONDS: 36.0}
    _log(client, v1.run_id, {**cost, **{f"baseline.{k}": v for k, v in cost.items()}}, tags)
    decided = handle_candidate(ctx, v1)
    assert decided is not None and decided.outcome == "promoted"
    client.set_model_version_tag(model, "1", SERVED_AT_TAG, iso(datetime.now(UTC)))

    v2 = worker.register(model, SPIKY)  # better all-pass, worse criterion: rejected
    decided = handle_candidate(ctx, v2)
    assert decided is not None and decided.outcome == "rejected"

    # a closed model scored on the same suite through the OpenAI backend
    external = client.create_run(worker.experiment_id, run_name="closed-api").info.run_id
    _log(
        client,
        external,
        {"all_pass_rate": 0.5, "criterion_pass_rate": 0.7, "n_tasks": 10.0, COST_PER_TASK: 0.02},
        {SUITE_SHA_TAG: SUITE, EVAL_MODEL_TAG: "closed-api"},
    )
    yield Adoptions(mlflow_server, model, v1.run_id, v2.run_id, v1.release_id, external)


def cells(html: str, table_id: str) -> list[list[str]]:
    table = re.search(rf'<table id="{table_id}">(.*?)</table>', html, re.S)
    assert table, f"no table {table_id}"
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)[1:]
    return [
        [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)]
        for r in rows
    ]


def test_report_of_a_promoted_version(adoptions: Adoptions, tmp_path: Path) -> None:
    reg = Registry(adoptions.server.tracking_uri)
    files = write_version(reg, adoptions.model, "1", tmp_path, price=Price(gpu_hour=3.6))
    html = files.html.read_text()

    # the adoption table: base 0.2 / 0.367 -> post-trained 0.4 / 0.633, promoted, served
    (row,) = cells(html, "adoption")
    assert row[:7] == ["v1", adoptions.release_v1, "20.0%", "36.7%", "40.0%", "63.3%", "promoted"]
    assert row[7] != "—"
    # three plots, embedded; nothing loaded from anywhere
    assert html.count("<img ") == 3
    assert html.count('src="data:image/png;base64,') == 3
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)

    # the timeline in order; every worker stage started and ended
    timeline = cells(html, "timeline")
    assert [r[0] for r in timeline] == TIMELINE
    assert all(r[1] != "—" for r in timeline)
    assert timeline[0][4] == "0.0s" and timeline[1][4] == "30.0s"
    assert [r[3] for r in timeline[2:9]] == ["50.0s"] * 7

    # gate checks with values and thresholds; the paired test
    checks = {r[0]: r for r in cells(html, "checks")}
    assert checks["all_pass_rate_vs_base"][1:4] == ["pass", "0.2", "0"]
    paired = {r[0]: r for r in cells(html, "paired")}
    assert paired["all-pass rate difference"][1] == "+20.0 pt"
    assert paired["McNemar exact p (all-pass)"][1] != "—"

    # per area, with intervals
    areas = {r[0]: r for r in cells(html, "areas")}
    assert set(areas) == {"immigration", "tax"}
    assert areas["tax"][1] == "20.0%" and areas["tax"][3] == "40.0%"
    assert areas["tax"][4].startswith("[")

    # quality against cost: priced from the GPU-hour price (36 s / 10 tasks at 3.6/h = 0.0036)
    costs = {r[0]: r for r in cells(html, "costs")}
    mine = next(k for k in costs if k.endswith("(this version)"))
    assert costs[mine][1] == "champion" and costs[mine][4] == "0.0036"
    assert costs["acme/base"][1] == "base" and costs["acme/base"][4] == "0.0036"
    assert costs["closed-api"][1:5] == ["external", "50.0%", "70.0%", "0.02"]
    assert any(k.startswith(f"{adoptions.model} v2") for k in costs)

    # the Markdown twin links the PNGs written next to it
    md = files.markdown.read_text()
    assert "| version | release | base all-pass | base criterion | post-trained all-pass" in md
    for name in ("score_distribution.png", "per_area.png", "quality_cost.png"):
        assert f"]({name})" in md
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")

    # and the same files in MLflow under report/
    logged = {Path(a.path).name for a in reg.client.list_artifacts(adoptions.v1_run, "report")}
    assert logged == {
        "score_distribution.png",
        "per_area.png",
        "quality_cost.png",
        "report.html",
        "report.md",
    }


def test_missing_points_are_dashes(adoptions: Adoptions, tmp_path: Path) -> None:
    reg = Registry(adoptions.server.tracking_uri)
    report = gather_version(reg, adoptions.model, None)  # the latest: v2
    assert report.version == "2" and report.row.decision == "rejected"
    assert report.row.release_to_serving_s is None
    assert [p.label for p in report.timeline] == TIMELINE
    assert [p.label for p in report.timeline if p.at] == ["decided"]
    html = write_version(reg, adoptions.model, None, tmp_path, log_artifacts=False).html.read_text()
    (row,) = cells(html, "adoption")
    assert row[6:] == ["rejected", "—"]
    assert {r[0]: r[1] for r in cells(html, "checks")}["criterion_pass_rate_vs_champion"] == "fail"
    # no price given: v1's and v2's runs logged tokens at most, so only the external model
    # (which logged its cost) is on the chart; the others are listed without a cost
    assert html.count("<img ") == 3
    costs = {r[0]: r for r in cells(html, "costs")}
    assert costs["closed-api"][4] == "0.02"
    assert costs[f"{adoptions.model} v2 (acme/base post-trained) (this version)"][4] == "—"
    assert not reg.client.list_artifacts(adoptions.v2_run, "report")


def test_summary_of_every_version(adoptions: Adoptions, tmp_path: Path) -> None:
    reg = Registry(adoptions.server.tracking_uri)
    rows, skipped = summary_rows(reg, adoptions.model)
    assert [(r.version, r.decision) for r in rows] == [("1", "promoted"), ("2", "rejected")]
    assert not skipped
    md = summary_markdown(adoptions.model, rows)
    assert "\n| v1 |" in md and "\n| v2 |" in md and "| 40.0% | 63.3% | promoted |" in md
    index, written = write_all(reg, adoptions.model, tmp_path, log_artifacts=False)
    assert sorted(written) == ["1", "2"]
    page = index.read_text()
    assert [r[0] for r in cells(page, "adoption")] == ["v1", "v2"]
    assert 'href="v1/report.html"' in page and (tmp_path / "v2" / "report.md").is_file()


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()  # only this command's output
    with pytest.raises(SystemExit) as exit_info:
        main(["report", *args])
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(exit_info.value.code or 0), out.out, out.err


@pytest.fixture
def cli_env(adoptions: Adoptions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPTAKE_MLFLOW_TRACKING_URI", adoptions.server.tracking_uri)
    monkeypatch.setenv("UPTAKE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("UPTAKE_CONFIG", raising=False)


@pytest.mark.usefixtures("cli_env")
def test_cli_writes_the_report(
    adoptions: Adoptions, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        ["--model", adoptions.model, "--version", "1", "--out", str(tmp_path / "r"), "--no-log"],
        capsys,
    )
    assert code == 0 and "report.html" in out
    assert (tmp_path / "r" / "report.html").is_file() and (tmp_path / "r" / "report.md").is_file()


@pytest.mark.usefixtures("cli_env")
def test_cli_errors_are_one_line(
    adoptions: Adoptions, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    worker = Worker(adoptions.server.tracking_uri)
    unscored = f"uptake-report-{uuid.uuid4().hex[:8]}"
    worker.register(unscored, GOOD, log_metrics=False)
    cases = {
        ("--model", adoptions.model, "--version", "99"): "has no version 99",
        ("--model", f"nothing-{uuid.uuid4().hex[:6]}"): "has no versions",
        ("--model", unscored): "has no all_pass_rate / criterion_pass_rate metrics",
        ("--model", adoptions.model, "--price-in", "1", "--gpu-hour-price", "2"): "not both",
        ("--model", adoptions.model, "--cpu-hour-price", "1", "--gpu-hour-price", "2"): "not both",
    }
    for args, message in cases.items():
        code, _, err = run_cli([*args, "--out", str(tmp_path / "x")], capsys)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, err)
        assert code == (2 if "not both" in message else 1), (args, code)
    with pytest.raises(ReportError, match="has no version"):
        gather_version(Registry(adoptions.server.tracking_uri), adoptions.model, "7")

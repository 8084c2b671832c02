"""The adoption report in a real browser: Debian's chromium opens the HTML file as a person
would; the table must render with its cells, every plot must load (naturalWidth > 0), and the
page must ask the network for nothing (it is self-contained). A release as the demo adopts it
(a long id, a run that priced itself) must show its quality-cost chart and fit the page."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.entities import Metric
from playwright.sync_api import Page, expect

from pipeline.eval.cost import cost_metrics
from pipeline.eval.results import GenerationStats
from registry.mlflow_registry import Registry
from registry.report.write import write_all, write_version
from tests.conftest import MlflowServer
from tests.registry.helpers import BASE, GOOD, Worker, eval_result
from tests.registry.test_report import TIMELINE, Adoptions, adoptions  # noqa: F401 (fixture)
from uptake.cost import Price
from uptake.demo.config import CPU_HOUR_USD
from uptake.formatting import ELLIPSIS, MISSING
from uptake.mlflow_contract import BASELINE_PREFIX, COST_PER_TASK

# what this module tests does not depend on the MLflow store: one store (README "Tests")
pytestmark = pytest.mark.one_backend

# a long hub repo id and a 64-hex revision (a dir source's content hash): 140 characters
LONG_REPO = "an-organisation-with-a-long-name/legal-memo-llama-3.3-70b-instruct-sft-dpo-2607"
LONG_REVISION = "0123456789abcdef" * 4


def test_report_renders_in_a_browser(
    adoptions: Adoptions,  # noqa: F811 (the imported fixture)
    browser_page: Page,
    screenshot_dir: Path,
    tmp_path: Path,
) -> None:
    reg = Registry(adoptions.server.tracking_uri)
    files = write_version(
        reg, adoptions.model, "1", tmp_path, price=Price(gpu_hour=3.6), log_artifacts=False
    )
    page = browser_page
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(files.html.as_uri())

    expect(page.locator("h1")).to_contain_text(f"{adoptions.model} v1")
    headers = page.locator("#adoption thead th").all_inner_texts()
    assert headers[1:] == [
        "release",
        "base all-pass",
        "base criterion",
        "post-trained all-pass",
        "post-trained criterion",
        "decision",
        "release → serving",
    ]
    cells = page.locator("#adoption tbody tr").first.locator("td").all_inner_texts()
    assert cells[:7] == ["v1", adoptions.release_v1, "20.0%", "36.7%", "40.0%", "63.3%", "promoted"]
    assert cells[7] != "—"
    steps = page.locator("#timeline tbody tr td:first-child").all_inner_texts()
    assert steps == TIMELINE
    expect(page.locator("#checks tbody tr")).not_to_have_count(0)

    plots = page.locator("img.plot")
    expect(plots).to_have_count(3)
    widths = page.evaluate(
        "() => Promise.all([...document.images].map(i => i.decode().then(() => i.naturalWidth)))"
    )
    assert len(widths) == 3 and all(w > 0 for w in widths), widths
    assert all(u.startswith(("file:", "data:")) for u in requests), requests

    page.set_viewport_size({"width": 1100, "height": 1400})
    page.screenshot(path=str(screenshot_dir / "report.png"))
    assert (screenshot_dir / "report.png").stat().st_size > 10_000


@dataclass
class LongRelease:
    tracking_uri: str
    model: str
    release_id: str


@pytest.fixture(scope="module")
def priced_long_release(mlflow_server: MlflowServer) -> LongRelease:
    """A version whose run logged its own cost, as the worker does when given an hour price
    (``uptake demo`` gives it one): no price is handed to the report."""
    model = f"uptake-long-{uuid.uuid4().hex[:8]}"
    suite_sha = uuid.uuid4().hex * 2  # its own suite: only its own points on the chart
    worker = Worker(mlflow_server.tracking_uri)
    event = worker.register(
        model, GOOD, suite_sha=suite_sha, revision=LONG_REVISION, repo=LONG_REPO
    )
    price = Price(cpu_hour=CPU_HOUR_USD)
    metrics: dict[str, float] = {}
    for card, prefix, seconds in ((GOOD, "", 40.0), (BASE, BASELINE_PREFIX, 30.0)):
        generation = GenerationStats(seconds=seconds, n_tokens=640, batch_size=4)
        result = eval_result(card, LONG_REPO, suite_sha)
        metrics |= cost_metrics(result.model_copy(update={"generation": generation}), price, prefix)
    assert metrics[COST_PER_TASK] > 0 and metrics[BASELINE_PREFIX + COST_PER_TASK] > 0
    now = int(time.time() * 1000)
    worker.client.log_batch(
        event.run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()]
    )
    return LongRelease(mlflow_server.tracking_uri, model, event.release_id)


FITS = """() => {
    const body = getComputedStyle(document.body);
    const padding = parseFloat(body.paddingLeft) + parseFloat(body.paddingRight);
    return {
        page: document.documentElement.scrollWidth, viewport: window.innerWidth,
        table: document.querySelector("#adoption").getBoundingClientRect().width,
        body: document.body.clientWidth - padding,
    };
}"""


def assert_fits(page: Page) -> None:
    """Neither the page nor the adoption table is wider than the room it has, on a wide
    screen and on a narrow one."""
    for width in (1400, 1000):
        page.set_viewport_size({"width": width, "height": 900})
        sizes = page.evaluate(FITS)
        assert sizes["page"] <= sizes["viewport"], (width, sizes)
        assert sizes["table"] <= sizes["body"], (width, sizes)


def test_a_demo_release_shows_its_cost_chart_and_fits_the_page(
    priced_long_release: LongRelease, browser_page: Page, tmp_path: Path
) -> None:
    long = priced_long_release
    assert len(long.release_id) > 140
    reg = Registry(long.tracking_uri)
    files = write_version(reg, long.model, "1", tmp_path / "v1", log_artifacts=False)
    page = browser_page
    page.goto(files.html.as_uri())

    # the quality-cost chart is drawn from the cost the run logged, not a "no data" note
    chart = page.locator('img.plot[data-plot="quality_cost.png"]')
    expect(chart).to_have_count(1)
    assert chart.evaluate("i => i.decode().then(() => i.naturalWidth)") > 0
    expect(page.locator("body")).not_to_contain_text("no data logged")
    costs = page.locator("#costs tbody td:nth-child(5)").all_inner_texts()  # cost per task
    assert len(costs) == 2 and MISSING not in costs, costs  # the candidate and its base

    # the release cell is shortened; the full id is on hover
    cell = page.locator("#adoption tbody tr").first.locator("td").nth(1)
    shown = cell.inner_text()
    assert ELLIPSIS in shown and len(shown) < 50, shown
    expect(cell).to_have_attribute("title", long.release_id)
    assert_fits(page)

    index, _ = write_all(reg, long.model, tmp_path / "all", log_artifacts=False)
    page.goto(index.as_uri())
    expect(page.locator("#adoption td[title]")).to_have_attribute("title", long.release_id)
    assert_fits(page)

"""Approval in the MLflow UI, as a person does it, in a real browser (Debian's chromium).

The stack is real: the session's broker and MLflow server (SQLite: registry webhooks need a
SQL store), the promoter in manual gate mode with its webhook receiver, a candidate
registered and announced as ``candidate.registered``. The browser clicks from MLflow's home
page to the version, edits the tag ``approval`` from ``pending`` to ``approved`` in the
UI's own tag editor, and the test checks that the promoter moves ``champion`` within
seconds — through the webhook, not the reconcile loop (which is set to an hour here) — and
that serving (``ServingService``, the transformers engine on a tiny model logged as the
candidate's weights) starts answering with the approved version (``x-uptake-model-version``).

Screenshots of each step go to ``screenshot_dir``; docs/approvals.md shows them
(``UPTAKE_SCREENSHOTS_DIR=docs/img`` refreshes docs/img).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from registry.mlflow_registry import Registry
from registry.service import PromoterService
from serving.api import VERSION_HEADER
from serving.service import ServingService
from tests.core.kafka_helpers import read_topic
from tests.registry.conftest import configure
from tests.registry.helpers import GOOD, Worker, wait_for
from tests.serving.helpers import tiny_model
from uptake.bus import EventProducer, ensure_topics
from uptake.events import PromotionDecided, decode_event
from uptake.mlflow_contract import (
    APPROVAL_APPROVED,
    APPROVAL_PENDING,
    APPROVAL_TAG,
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
)
from uptake.serving_config import ServingSettings
from uptake.settings import Settings

# a promoter, serving, the MLflow UI and a browser; the browser fixture comes first so that
# a missing browser skips (or fails) before any server starts
# what this module tests does not depend on the MLflow store: one store (README "Tests")
pytestmark = [pytest.mark.slow, pytest.mark.one_backend]

# "within seconds": a webhook delivery and one decision (a few MLflow calls); generous
# because CI's 2 cores are shared. The reconcile loop is an hour away, so only the webhook
# can make it in time (asserted below as well).
PROMOTION_WITHIN_S = 30.0


def shot(page: Page, directory: Path, step: str) -> None:
    page.screenshot(path=str(directory / f"approval-{step}.png"))


def close_popups(page: Page) -> None:
    """Close MLflow's one-time pop-ups whenever they show, as a person would: the assistant
    side panel and the new-registry-UI notice (a modal that blocks clicks). Playwright runs
    these handlers before any action they would get in the way of."""
    assistant = page.get_by_role("button", name="Close", exact=True)
    notice = page.get_by_role("dialog").get_by_role("button", name="Try it now")
    page.add_locator_handler(assistant, lambda button: button.click())
    page.add_locator_handler(notice, lambda button: button.click())


def approval_row(page: Page):
    """The ``approval`` row of the version page's tag table."""
    cell = page.get_by_role("cell", name=APPROVAL_TAG, exact=True)
    return page.get_by_role("row").filter(has=cell)


def tag(reg: Registry, model: str, version: str, key: str) -> str | None:
    return (reg.version(model, version).tags or {}).get(key)


def ask(serving: ServingService, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Advise."}], "max_tokens": 4}
    return httpx.post(f"{serving.url}/v1/chat/completions", json=body, timeout=60)


@pytest.mark.parametrize("mlflow_server", ["sqlite"], indirect=True)
def test_a_person_approves_in_the_mlflow_ui_and_the_promoter_promotes(
    browser_page: Page, mlflow_settings: Settings, screenshot_dir: Path, tmp_path: Path
) -> None:
    model = f"uptake-legal-{uuid.uuid4().hex[:6]}"
    s = configure(mlflow_settings, model=model, mode="manual", webhook={"enabled": True})
    s = s.model_copy(update={"serving": ServingSettings(port=0, device="cpu")})
    ensure_topics(s)
    reg = Registry(s.tracking_uri)
    worker = Worker(s.tracking_uri)
    candidate = worker.register(model, GOOD)
    # the candidate's weights, where the worker logs them (the version's source)
    worker.client.log_artifacts(candidate.run_id, str(tiny_model(tmp_path / "m", 1)), "model")
    service = PromoterService(s, alerts=False).start()
    serving = ServingService(s, models=[model]).start()
    try:
        assert service.webhook_id is not None  # the promoter registered its MLflow webhook
        with EventProducer(s) as producer:
            producer.publish(candidate)
        wait_for(lambda: tag(reg, model, "1", APPROVAL_TAG) == APPROVAL_PENDING, 60, "pending")
        assert reg.aliases(model) == {CHALLENGER_ALIAS: "1"}
        assert ask(serving, model).status_code == 503  # a pending candidate is not served

        page = browser_page
        close_popups(page)
        page.goto(f"{s.tracking_uri}/")
        expect(page.get_by_role("heading", name="Welcome to MLflow")).to_be_visible()
        expect(page.get_by_role("heading", name="Recent Experiments")).to_be_visible()
        page.get_by_role("button", name="Model training").hover()  # lets the handlers run
        shot(page, screenshot_dir, "1-home")

        # MLflow 3 opens in GenAI mode; the Model Registry is under "Model training"
        page.get_by_role("button", name="Model training").click()
        page.get_by_role("link", name="Model registry").click()
        expect(page.get_by_role("heading", name="Registered Models")).to_be_visible()
        search = page.get_by_role("textbox", name="Search registered models")
        search.fill(model)
        search.press("Enter")
        page.get_by_role("link", name=model, exact=True).click()

        expect(page.get_by_role("heading", name=model)).to_be_visible()
        expect(page.get_by_role("status", name=APPROVAL_TAG)).to_contain_text(APPROVAL_PENDING)
        shot(page, screenshot_dir, "2-model")
        page.get_by_role("link", name="Version 1", exact=True).click()

        expect(page.get_by_role("heading", name="Version 1")).to_be_visible()
        assert page.url.endswith(f"#/models/{model}/versions/1")
        row = approval_row(page)
        expect(row.get_by_role("cell").nth(1)).to_have_text(APPROVAL_PENDING)
        expect(page.get_by_role("status", name=CHALLENGER_ALIAS)).to_be_visible()
        shot(page, screenshot_dir, "3-version-pending")

        # the pencil has no accessible name in MLflow 3.17; its test id is the stable handle
        row.get_by_test_id("editable-table-button-edit").click()
        editor = row.get_by_role("textbox")
        expect(editor).to_have_value(APPROVAL_PENDING)
        editor.fill(APPROVAL_APPROVED)
        shot(page, screenshot_dir, "4-tag-editor")
        row.get_by_role("button", name="Save").click()
        saved = time.monotonic()
        wait_for(lambda: reg.champion(model) == "1", PROMOTION_WITHIN_S, "promotion")
        took = time.monotonic() - saved
        expect(row.get_by_role("cell").nth(1)).to_have_text(APPROVAL_APPROVED)
        assert tag(reg, model, "1", APPROVAL_TAG) == APPROVAL_APPROVED  # the UI wrote MLflow
        assert service.receiver_stats.accepted >= 1  # MLflow's signed delivery reached it
        assert service.worker.passes == 1  # only the start-up reconcile: the webhook did it

        page.reload()  # a person refreshes the version page to see the decision
        expect(page.get_by_role("status", name=CHAMPION_ALIAS)).to_be_visible()
        expect(page.get_by_role("status", name=CHALLENGER_ALIAS)).to_have_count(0)
        shot(page, screenshot_dir, "5-champion")

        answer = wait_for(
            lambda: (r := ask(serving, model)).status_code == 200 and r, 120, "serving v1"
        )
        assert answer.headers[VERSION_HEADER] == f"{model}/1"  # "<registered model>/<version>"
        served = time.monotonic() - saved
    finally:
        serving.stop()
        service.stop()

    assert reg.aliases(model) == {CHAMPION_ALIAS: "1"}
    records = read_topic(s.kafka_bootstrap, s.kafka.topics.decisions, expected=3)
    decided = [decode_event(r.value) for r in records]
    assert [
        (e.version, e.outcome, e.decided_by) for e in decided if isinstance(e, PromotionDecided)
    ] == [("1", "pending_approval", "gate"), ("1", "promoted", "approval:mlflow-ui")]
    for step in ("1-home", "2-model", "3-version-pending", "4-tag-editor", "5-champion"):
        assert (screenshot_dir / f"approval-{step}.png").stat().st_size > 10_000
    print(f"approval saved in the UI -> champion in {took:.1f} s, served in {served:.1f} s")

"""Manual mode: pending tag + alert, approval by the MLflow UI's own REST call, reconcile."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from registry.mlflow_registry import Registry
from registry.service import PromoterService, webhook_secret
from registry.status import registry_status
from tests.core.cli_helpers import run_uptake
from tests.core.kafka_helpers import read_topic
from tests.registry.conftest import configure
from tests.registry.helpers import BETTER, GOOD, Endpoint, Worker, wait_for
from uptake.bus import EventProducer, ensure_topics
from uptake.events import PromotionDecided, decode_event
from uptake.mlflow_contract import (
    APPROVAL_APPROVED,
    APPROVAL_PENDING,
    APPROVAL_REJECTED,
    APPROVAL_TAG,
    CHALLENGER_ALIAS,
    DECISION_TAG,
)
from uptake.registry_config import AlertSettings, SlackChannel
from uptake.settings import Settings
from uptake.webhooks import sign_mlflow

BEST = {"immigration": [3, 3, 3, 3, 1], "tax": [3, 3, 3, 3, 2]}  # 0.8 / 0.9


def ui_set_tag(tracking_uri: str, model: str, version: str, key: str, value: str) -> None:
    """Exactly the request the MLflow UI sends when a tag is saved on a model version page."""
    response = httpx.post(
        f"{tracking_uri}/ajax-api/2.0/mlflow/model-versions/set-tag",
        json={"key": key, "value": value, "name": model, "version": version},
        timeout=30,
    )
    response.raise_for_status()


def tag(reg: Registry, model: str, version: str, key: str) -> str | None:
    return (reg.version(model, version).tags or {}).get(key)


def decided(s: Settings, expected: int) -> list[tuple[str, str, str]]:
    records = read_topic(s.kafka_bootstrap, s.kafka.topics.decisions, expected=expected)
    events = [decode_event(r.value) for r in records]
    return [(e.version, e.outcome, e.decided_by) for e in events if isinstance(e, PromotionDecided)]


def test_webhook_approval_promotes_within_seconds_and_rejection_does_not(
    mlflow_settings: Settings, worker: Worker, model_name: str, monkeypatch
) -> None:
    with Endpoint() as slack:
        monkeypatch.setenv("TEST_SLACK_URL", slack.url)
        s = configure(mlflow_settings, model=model_name, mode="manual", webhook={"enabled": True})
        s = s.model_copy(
            update={
                "mlflow": s.mlflow.model_copy(update={"registered_model": model_name}),
                "alerts": AlertSettings(
                    channels={"slack": SlackChannel(url_env="TEST_SLACK_URL")},
                    consumer_group=f"alerter-{uuid.uuid4().hex[:8]}",
                ),
            }
        )
        ensure_topics(s)
        reg = Registry(s.tracking_uri)
        service = PromoterService(s).start()
        try:
            assert service.webhook_id is not None  # registered itself with MLflow
            with EventProducer(s) as producer:
                producer.publish(worker.register(model_name, GOOD))
                wait_for(lambda: tag(reg, model_name, "1", APPROVAL_TAG) == APPROVAL_PENDING, 60)
                assert reg.aliases(model_name) == {CHALLENGER_ALIAS: "1"}
                wait_for(
                    lambda: any("waits for approval" in b["text"] for b in slack.bodies()),
                    30,
                    "pending-approval alert",
                )
                section = registry_status(s)
                assert section.data[model_name]["pending_approval"] == ["1"]

                started = time.monotonic()
                ui_set_tag(s.tracking_uri, model_name, "1", APPROVAL_TAG, APPROVAL_APPROVED)
                wait_for(lambda: reg.champion(model_name) == "1", 20, "promotion via webhook")
                assert time.monotonic() - started < 20
                assert service.receiver_stats.accepted >= 1
                assert service.worker.passes == 1  # only the start-up pass: the webhook did it

                producer.publish(worker.register(model_name, BETTER))
                wait_for(lambda: tag(reg, model_name, "2", APPROVAL_TAG) == APPROVAL_PENDING, 60)
                ui_set_tag(s.tracking_uri, model_name, "2", APPROVAL_TAG, APPROVAL_REJECTED)
                wait_for(lambda: tag(reg, model_name, "2", DECISION_TAG) == "rejected", 20)
            assert reg.champion(model_name) == "1"
            assert CHALLENGER_ALIAS not in reg.aliases(model_name)
            section = registry_status(s)
            assert section.data[model_name] == {
                "champion": "1",
                "challenger": None,
                "pending_approval": [],
                "mode": "manual",
            }
            wait_for(lambda: any("promoted v1" in b["text"] for b in slack.bodies()), 30)
        finally:
            service.stop()
    assert decided(s, expected=5) == [
        ("1", "pending_approval", "gate"),
        ("1", "promoted", "approval:mlflow-ui"),
        ("2", "pending_approval", "gate"),
        ("2", "rejected", "approval:mlflow-ui"),
    ]


def test_reconcile_promotes_without_webhooks_and_rechecks_the_champion(
    mlflow_settings: Settings, worker: Worker, model_name: str
) -> None:
    # no webhooks
    s = configure(mlflow_settings, model=model_name, mode="manual", reconcile_interval_s=0.5)
    ensure_topics(s)
    reg = Registry(s.tracking_uri)
    service = PromoterService(s, alerts=False).start()
    env = {"UPTAKE_MLFLOW_TRACKING_URI": s.tracking_uri}
    try:
        with EventProducer(s) as producer:
            producer.publish(worker.register(model_name, GOOD))
            wait_for(lambda: tag(reg, model_name, "1", APPROVAL_TAG) == APPROVAL_PENDING, 60)
            result = run_uptake("approve", model_name, "1", "--by", "alice", home=s.home, **env)
            assert result.returncode == 0, result.stderr
            wait_for(lambda: reg.champion(model_name) == "1", 60, "promotion via reconcile")

            producer.publish(worker.register(model_name, BETTER))
            producer.publish(worker.register(model_name, BEST))
            for v in ("2", "3"):
                wait_for(lambda v=v: tag(reg, model_name, v, APPROVAL_TAG) == APPROVAL_PENDING, 60)
            ui_set_tag(s.tracking_uri, model_name, "3", APPROVAL_TAG, APPROVAL_APPROVED)
            wait_for(lambda: reg.champion(model_name) == "3", 60)
            # v2 beat v1 when it arrived; approved now, it no longer beats champion v3
            ui_set_tag(s.tracking_uri, model_name, "2", APPROVAL_TAG, APPROVAL_APPROVED)
            decision = wait_for(lambda: service.ctx.store.decision(model_name, "2", "approval"), 60)
            # the decision is recorded before it is mirrored to MLflow tags (enact.enact)
            wait_for(lambda: tag(reg, model_name, "2", DECISION_TAG) == "rejected", 30)
        assert reg.champion(model_name) == "3"
        assert decision.outcome == "rejected"
        assert "no longer beats the current champion v3" in decision.reason
        failed = {c.name for c in decision.checks if not c.passed}
        assert failed == {
            "all_pass_rate_vs_champion",
            "criterion_pass_rate_vs_champion",
            "area.immigration",
            "area.tax",
        }
        assert service.receiver is None
    finally:
        service.stop()
    assert ("1", "promoted", "approval:alice") in decided(s, expected=7)

    missing = run_uptake("reject", model_name, "99", home=s.home, **env)
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"error: {model_name} has no version 99"


def test_forged_webhook_is_ignored_and_replays_refused(
    mlflow_settings: Settings, worker: Worker, model_name: str
) -> None:
    # the receiver runs, but MLflow has no webhook for it: only our own requests reach it
    s = configure(
        mlflow_settings, model=model_name, mode="manual", webhook={"enabled": True, "manage": False}
    )
    ensure_topics(s)
    reg = Registry(s.tracking_uri)
    service = PromoterService(s, alerts=False).start()
    try:
        with EventProducer(s) as producer:
            producer.publish(worker.register(model_name, GOOD))
            wait_for(lambda: tag(reg, model_name, "1", APPROVAL_TAG) == APPROVAL_PENDING, 60)
        reg.set_version_tags(
            model_name, "1", {APPROVAL_TAG: APPROVAL_APPROVED}
        )  # no delivery follows
        body = json.dumps(
            {
                "entity": "model_version_tag",
                "action": "set",
                "data": {
                    "name": model_name,
                    "version": "1",
                    "key": APPROVAL_TAG,
                    "value": "approved",
                },
            }
        )
        ts = str(int(time.time()))

        def deliver(delivery_id: str, secret: str) -> int:
            headers = {
                "X-MLflow-Delivery-Id": delivery_id,
                "X-MLflow-Timestamp": ts,
                "X-MLflow-Signature": sign_mlflow(secret, delivery_id, ts, body),
            }
            return httpx.post(service.receiver.url, headers=headers, content=body).status_code

        assert deliver("forged-1", "guessed-secret") == 401
        time.sleep(1.5)
        assert reg.champion(model_name) is None  # the forged delivery changed nothing
        assert service.ctx.store.candidate_state(model_name, "1") == "pending_approval"

        assert deliver("genuine-1", webhook_secret(s)) == 202
        wait_for(lambda: reg.champion(model_name) == "1", 20, "promotion via signed webhook")
        assert deliver("genuine-1", webhook_secret(s)) == 409  # replayed
        stats = service.receiver_stats
        assert (stats.rejected, stats.accepted, stats.replayed) == (1, 1, 1)
    finally:
        service.stop()


def test_a_stopping_promoter_leaves_the_webhook_another_one_took_over(
    mlflow_settings: Settings,
) -> None:
    s = configure(mlflow_settings, mode="manual", webhook={"enabled": True})
    ensure_topics(s)
    client = MlflowClient(s.tracking_uri)
    first = PromoterService(s, alerts=False).start()
    second = PromoterService(s, alerts=False).start()
    try:
        assert first.webhook_id == second.webhook_id  # one webhook, found by its name
        assert first.webhook_url != second.webhook_url
        assert client.get_webhook(first.webhook_id).url == second.webhook_url
        first.stop()
        assert client.get_webhook(second.webhook_id).url == second.webhook_url  # still there
    finally:
        second.stop()
    with pytest.raises(MlflowException):  # the last one out deletes it
        client.get_webhook(second.webhook_id)

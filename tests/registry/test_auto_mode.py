"""Auto mode on a real MLflow server and broker: the promoter consumes candidate.registered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry import audit
from registry.decision_flow import handle_candidate
from registry.mlflow_registry import Registry
from registry.service import PromoterService, make_context
from tests.core.kafka_helpers import read_topic
from tests.registry.conftest import configure
from tests.registry.helpers import BETTER, GOOD, SPIKY, Worker, wait_for
from uptake.bus import EventProducer, ensure_topics
from uptake.events import ChampionChanged, PromotionDecided, decode_event
from uptake.mlflow_contract import CHALLENGER_ALIAS, DECISION_TAG, PREVIOUS_CHAMPION_TAG
from uptake.settings import Settings

BEST = {"immigration": [3, 3, 3, 3, 1], "tax": [3, 3, 3, 3, 2]}  # 0.8 / 0.9


def has_decisions(service: PromoterService, model: str, *versions: str) -> bool:
    return all(service.ctx.store.decision(model, v, "gate") is not None for v in versions)


def test_auto_mode_promotes_rejects_and_decides_once(
    mlflow_settings: Settings, worker: Worker, model_name: str
) -> None:
    s = configure(mlflow_settings, model=model_name, mode="auto")
    ensure_topics(s)
    reg = Registry(s.tracking_uri)
    service = PromoterService(s, alerts=False).start()
    try:
        with EventProducer(s) as producer:
            v1 = worker.register(model_name, GOOD)  # no champion yet: must beat its base
            producer.publish(v1)
            wait_for(lambda: reg.champion(model_name) == "1", 60, "v1 promoted")
            v2 = worker.register(model_name, SPIKY)  # better all-pass, worse criterion rate
            v3 = worker.register(model_name, BETTER)  # better on both
            v4 = worker.register(model_name, BEST, suite_sha="t" * 64)  # another suite
            # Different release ids land on different partitions, whose order is not defined:
            # let v2 (twice: a duplicate delivery) be decided against champion v1 first.
            producer.publish(v2)
            producer.publish(v2)
            wait_for(lambda: service.consumer.stats.processed >= 3, 60, "v2 handled twice")
            wait_for(lambda: has_decisions(service, model_name, "2"), 60, "v2 decided")
            for event in (v3, v4):
                producer.publish(event)
            # a count alone is not enough: under load the group may redeliver (v1 again)
            wait_for(lambda: service.consumer.stats.processed >= 5, 60, "all events handled")
            wait_for(lambda: has_decisions(service, model_name, "3", "4"), 60, "v3 and v4 decided")
    finally:
        service.stop()

    assert reg.champion(model_name) == "3"
    assert CHALLENGER_ALIAS not in reg.aliases(model_name)
    records = read_topic(s.kafka_bootstrap, s.kafka.topics.decisions, expected=6)
    events = [decode_event(r.value) for r in records]
    decided = [e for e in events if isinstance(e, PromotionDecided)]
    assert sorted((e.version, e.outcome) for e in decided) == [
        ("1", "promoted"),
        ("2", "rejected"),  # exactly one decision despite the duplicate
        ("3", "promoted"),
        ("4", "rejected"),
    ]
    by_version = {e.version: e for e in decided}
    assert "criterion_pass_rate_vs_champion" in by_version["2"].reason
    failed = {c.name for c in by_version["2"].checks if not c.passed}
    assert failed == {"criterion_pass_rate_vs_champion"}
    assert "suite mismatch" in by_version["4"].reason
    assert by_version["3"].reason.startswith("beats champion v1")
    changed = [e for e in events if isinstance(e, ChampionChanged)]
    assert [(e.version, e.previous_version, e.reason) for e in changed] == [
        ("1", None, "promotion"),
        ("3", "1", "promotion"),
    ]
    assert changed[1].model_uri == f"models:/{model_name}/3"

    # the decision is logged to the candidate's run, with every check
    client = worker.client
    run = client.get_run(v2.run_id)
    assert run.data.tags[DECISION_TAG] == "rejected"
    path = client.download_artifacts(v2.run_id, "uptake/decision-gate.json")
    logged = json.loads(Path(path).read_text())
    assert logged["outcome"] == "rejected" and logged["champion_version"] == "1"
    assert {c["name"] for c in logged["checks"]} >= {"all_pass_rate_vs_champion", "area.tax"}

    # audit trail: state store and its MLflow mirror
    history = audit.read(service.ctx.store.engine, model_name)
    assert [(h.seq, h.version, h.previous_version, h.decided_by) for h in history] == [
        (1, "1", None, "gate"),
        (2, "3", "1", "gate"),
    ]
    assert history[1].checks and history[1].release_id == v3.release_id
    mirror = audit.read_mirror(reg, model_name)
    assert [(m["seq"], m["v"], m["prev"]) for m in mirror] == [(1, "1", None), (2, "3", "1")]
    assert reg.version(model_name, "3").tags[PREVIOUS_CHAMPION_TAG] == "1"
    assert reg.version(model_name, "2").tags[DECISION_TAG] == "rejected"
    assert len(service.ctx.store.decisions_of(model_name)) == 4


def test_significance_is_tested_on_the_per_task_results_logged_in_mlflow(
    mlflow_settings: Settings, worker: Worker, model_name: str
) -> None:
    """The McNemar check pairs tasks from the runs' ``eval/results.jsonl`` artifacts: against
    the base (``baseline_results.jsonl``) without a champion, against the champion's after."""
    s = configure(
        mlflow_settings, model=model_name, mode="auto", gate={"significance": {"test": "mcnemar"}}
    )
    ensure_topics(s)
    reg = Registry(s.tracking_uri)
    strong = {"immigration": [3, 3, 3, 3, 0], "tax": [3, 3, 3, 3, 0]}  # 6 more all-pass tasks
    stronger = {"immigration": [3, 3, 3, 3, 3], "tax": [3, 3, 3, 3, 0]}  # 1 more than strong
    with EventProducer(s) as producer:
        ctx = make_context(s, producer)
        v1 = handle_candidate(ctx, worker.register(model_name, strong))
        v2 = handle_candidate(ctx, worker.register(model_name, stronger))
    assert v1 is not None and v1.outcome == "promoted"
    sig1 = next(c for c in v1.checks if c.name == "significance")
    assert sig1.passed and sig1.value == pytest.approx(2 * 0.5**6)  # 6 vs 0 discordant
    assert "vs base" in sig1.detail
    assert v2 is not None and v2.outcome == "rejected"
    assert {c.name for c in v2.checks if not c.passed} == {"significance"}  # better, by chance?
    sig2 = next(c for c in v2.checks if c.name == "significance")
    assert sig2.value == pytest.approx(1.0) and "champion v1" in sig2.detail
    assert reg.champion(model_name) == "1"

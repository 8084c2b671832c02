"""``uptake promoter --once``, ``history`` and ``rollback`` as a user runs them; two promoters."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from registry import audit
from registry.decision_flow import handle_candidate
from registry.enact import PromotionConflict, promote
from registry.locks import ModelLeaseLost
from registry.mlflow_registry import Registry
from registry.reconcile import OUTSIDE, reconcile_once
from registry.rollback import rollback
from registry.service import make_context
from tests.core.cli_helpers import run_uptake
from tests.core.kafka_helpers import read_topic
from tests.registry.conftest import configure
from tests.registry.helpers import BETTER, GOOD, Worker
from uptake.bus import EventProducer, ensure_topics
from uptake.events import ChampionChanged, decode_event
from uptake.mlflow_contract import (
    APPROVAL_APPROVED,
    APPROVAL_PENDING,
    APPROVAL_TAG,
    CHAMPION_ALIAS,
    DECISION_TAG,
    PREVIOUS_CHAMPION_TAG,
)
from uptake.settings import Settings

BEST = {"immigration": [3, 3, 3, 3, 1], "tax": [3, 3, 3, 3, 2]}


def cli_env(s: Settings) -> dict[str, str]:
    t = s.kafka.topics
    return {
        "UPTAKE_KAFKA_BOOTSTRAP": s.kafka_bootstrap or "",
        "UPTAKE_MLFLOW_TRACKING_URI": s.tracking_uri,
        "UPTAKE_KAFKA__TOPICS__RELEASES": t.releases,
        "UPTAKE_KAFKA__TOPICS__RUNS": t.runs,
        "UPTAKE_KAFKA__TOPICS__DECISIONS": t.decisions,
        "UPTAKE_KAFKA__TOPICS__DLQ": t.dlq,
        "UPTAKE_REGISTRY__CONSUMER_GROUP": s.registry.consumer_group,
        "UPTAKE_MLFLOW__REGISTERED_MODEL": s.mlflow.registered_model,
    }


def tracking(mlflow_settings: Settings, model_name: str, **registry: object) -> Settings:
    """Auto-mode settings whose tracked model (what reconcile looks at) is this test's."""
    return configure(mlflow_settings, model=model_name, mode="auto", **registry)


@contextmanager
def killed_at(target: object, method: str) -> Iterator[None]:
    """The process "dies" (RuntimeError) when ``target.method`` is next called."""

    def dies(*args: object, **kwargs: object) -> None:
        raise RuntimeError("process killed")

    original = getattr(target, method)
    setattr(target, method, dies)
    try:
        with pytest.raises(RuntimeError, match="process killed"):
            yield
    finally:
        setattr(target, method, original)


def test_rollback_restores_previous_champion_and_audits(
    mlflow_settings: Settings, worker: Worker, model_name: str
) -> None:
    s = configure(mlflow_settings, model=model_name, mode="auto")
    ensure_topics(s)
    env = cli_env(s)
    with EventProducer(s) as producer:
        # two releases are keyed apart and may be consumed in any order: decide v1 first
        assert handle_candidate(make_context(s, producer), worker.register(model_name, GOOD))
        producer.publish(worker.register(model_name, BETTER))
    once = run_uptake("promoter", "--once", home=s.home, timeout=120, **env)
    assert once.returncode == 0, once.stderr
    reg = Registry(s.tracking_uri)
    assert reg.champion(model_name) == "2"

    back = run_uptake(
        "rollback", model_name, "--by", "bob", "--note", "bad answers", home=s.home, **env
    )
    assert back.returncode == 0, back.stderr
    assert reg.champion(model_name) == "1"
    forth = run_uptake("rollback", model_name, "--to", "2", "--by", "carol", home=s.home, **env)
    assert forth.returncode == 0, forth.stderr
    assert reg.champion(model_name) == "2"

    shown = run_uptake("history", model_name, "--json", home=s.home, **env)
    assert shown.returncode == 0, shown.stderr
    rows = [
        (h["seq"], h["version"], h["previous_version"], h["reason"], h["decided_by"])
        for h in json.loads(shown.stdout)
    ]
    assert rows == [
        (1, "1", None, "promotion", "gate"),
        (2, "2", "1", "promotion", "gate"),
        (3, "1", "2", "rollback", "rollback:bob"),
        (4, "2", "1", "rollback", "rollback:carol"),
    ]
    assert "bad answers" in json.loads(shown.stdout)[2]["detail"]
    mirror = audit.read_mirror(reg, model_name)
    assert [(m["seq"], m["v"], m["reason"], m["by"]) for m in mirror] == [
        (1, "1", "promotion", "gate"),
        (2, "2", "promotion", "gate"),
        (3, "1", "rollback", "rollback:bob"),
        (4, "2", "rollback", "rollback:carol"),
    ]
    assert reg.version(model_name, "1").tags[PREVIOUS_CHAMPION_TAG] == "2"

    records = read_topic(s.kafka_bootstrap, s.kafka.topics.decisions, expected=6)
    changed = [
        e for e in map(decode_event, (r.value for r in records)) if isinstance(e, ChampionChanged)
    ]
    assert [(e.version, e.previous_version, e.reason) for e in changed] == [
        ("1", None, "promotion"),
        ("2", "1", "promotion"),
        ("1", "2", "rollback"),
        ("2", "1", "rollback"),
    ]

    same = run_uptake("rollback", model_name, "--to", "2", home=s.home, **env)
    assert same.returncode == 2 and "already the champion" in same.stderr


def test_two_promoters_decide_once_and_the_alias_is_compare_and_set(
    mlflow_settings: Settings, worker: Worker, model_name: str
) -> None:
    s = configure(mlflow_settings, model=model_name, mode="auto")
    ensure_topics(s)
    reg = Registry(s.tracking_uri)
    with EventProducer(s) as producer:
        a, b = make_context(s, producer), make_context(s, producer)  # one store, two holders
        v1 = worker.register(model_name, GOOD)
        results: list[object] = []
        threads = [
            threading.Thread(target=lambda ctx=ctx: results.append(handle_candidate(ctx, v1)))
            for ctx in (a, b)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert reg.champion(model_name) == "1"
        assert len(results) == 2 and all(r is not None for r in results)
        assert len(a.store.decisions_of(model_name)) == 1
        assert len(audit.read(a.store.engine, model_name)) == 1

        worker.register(model_name, BETTER)
        v3 = worker.register(model_name, BEST)
        # a promoter that does not share our state store moves the alias under us
        reg.set_alias(model_name, CHAMPION_ALIAS, "2")
        with pytest.raises(PromotionConflict, match="champion is v2"):
            promote(
                a,
                model_name,
                "3",
                expected_champion="1",
                reason="promotion",
                decided_by="gate",
                detail="test",
            )
        assert reg.champion(model_name) == "2"

        # ... and once more right after our own alias write: the re-read catches it,
        # the decision is undone and taken again against the champion of now
        original = a.registry.set_alias
        moved = []

        def racing_set_alias(model: str, alias: str, version: str) -> None:
            original(model, alias, version)
            if alias == CHAMPION_ALIAS and not moved:
                moved.append(version)
                original(model, alias, "1")

        a.registry.set_alias = racing_set_alias  # type: ignore[method-assign]
        decision = handle_candidate(a, v3)
    assert moved == ["3"]
    assert decision is not None and decision.outcome == "promoted"
    assert decision.champion_version == "1"  # re-decided against the champion it found
    assert reg.champion(model_name) == "3"
    history = audit.read(a.store.engine, model_name)
    assert [(h.version, h.previous_version) for h in history] == [("1", None), ("3", "1")]


def test_reconcile_decides_a_version_whose_event_never_came(
    mlflow_settings: Settings, worker: Worker, model_name: str
) -> None:
    s = tracking(mlflow_settings, model_name, adopt_after_s=0.0)
    ensure_topics(s)
    worker.register(model_name, GOOD)  # registered, but candidate.registered was lost
    with EventProducer(s) as producer:
        ctx = make_context(s, producer)
        assert reconcile_once(ctx) == 0
        assert Registry(s.tracking_uri).champion(model_name) == "1"
        decision = ctx.store.decision(model_name, "1", "gate")
        assert decision is not None and decision.outcome == "promoted"
        reconcile_once(ctx)  # decided once, not again
        assert len(ctx.store.decisions_of(model_name)) == 1


def test_a_redelivered_candidate_repairs_tags_but_keeps_a_verdict_set_meanwhile(
    mlflow_settings: Settings, worker: Worker, model_name: str
) -> None:
    s = configure(mlflow_settings, model=model_name, mode="manual")
    ensure_topics(s)
    reg = Registry(s.tracking_uri)
    event = worker.register(model_name, GOOD)
    with EventProducer(s) as producer:
        ctx = make_context(s, producer)
        first = handle_candidate(ctx, event)
        assert first is not None and first.outcome == "pending_approval"

        # a crash before the tags were written: the redelivery writes them
        reg.client.delete_model_version_tag(model_name, "1", APPROVAL_TAG)
        assert handle_candidate(ctx, event) == first
        assert reg.version(model_name, "1").tags[APPROVAL_TAG] == APPROVAL_PENDING

        # a person approves; the event is redelivered before the promoter acted on it
        reg.set_version_tags(model_name, "1", {APPROVAL_TAG: APPROVAL_APPROVED})
        assert handle_candidate(ctx, event) == first
        assert reg.version(model_name, "1").tags[APPROVAL_TAG] == APPROVAL_APPROVED
        assert reg.champion(model_name) is None
        reconcile_once(ctx)
    assert reg.champion(model_name) == "1"
    assert ctx.store.decision(model_name, "1", "approval").outcome == "promoted"
    assert len(ctx.store.decisions_of(model_name)) == 2


@pytest.mark.parametrize("crash", ["before_alias_move", "after_alias_move"])
@pytest.mark.parametrize("recovery", ["redelivery", "reconcile"])
def test_an_interrupted_promotion_is_finished_once(
    crash: str, recovery: str, mlflow_settings: Settings, worker: Worker, model_name: str
) -> None:
    s = tracking(mlflow_settings, model_name)
    ensure_topics(s)
    reg = Registry(s.tracking_uri)
    event = worker.register(model_name, GOOD)
    with EventProducer(s) as producer:
        ctx = make_context(s, producer)
        target, name = (
            (ctx.registry, "set_alias") if crash == "before_alias_move" else (ctx.outbox, "add")
        )
        with killed_at(target, name):
            handle_candidate(ctx, event)
        assert ctx.store.candidate_state(model_name, "1") == "promoting"
        assert reg.champion(model_name) == ("1" if crash == "after_alias_move" else None)
        assert audit.read(ctx.store.engine, model_name) == []

        if recovery == "redelivery":
            decision = handle_candidate(ctx, event)
            assert decision is not None and decision.outcome == "promoted"
        else:
            reconcile_once(ctx)
        handle_candidate(ctx, event)  # and once more: nothing left to do
    assert reg.champion(model_name) == "1"
    assert ctx.store.candidate_state(model_name, "1") == "promoted"
    assert len(ctx.store.decisions_of(model_name)) == 1
    history = audit.read(ctx.store.engine, model_name)
    assert [(h.seq, h.version, h.previous_version) for h in history] == [(1, "1", None)]
    assert reg.version(model_name, "1").tags[DECISION_TAG] == "promoted"


def test_champion_moves_outside_uptake_are_recorded_and_announced(
    mlflow_settings: Settings, worker: Worker, model_name: str
) -> None:
    s = tracking(mlflow_settings, model_name)
    ensure_topics(s)
    reg = Registry(s.tracking_uri)
    with EventProducer(s) as producer:
        ctx = make_context(s, producer)
        handle_candidate(ctx, worker.register(model_name, GOOD))
        handle_candidate(ctx, worker.register(model_name, BETTER))
        assert reg.champion(model_name) == "2"
        reconcile_once(ctx)  # in step: nothing to record

        # a person moves the alias back in the MLflow UI
        reg.set_alias(model_name, CHAMPION_ALIAS, "1")
        reconcile_once(ctx)
        reconcile_once(ctx)  # recorded once

        # a rollback dies after moving the alias, before writing its history
        with killed_at(ctx.outbox, "add"):
            rollback(ctx, model_name, "2", by="bob")
        assert reg.champion(model_name) == "2"
        reconcile_once(ctx)

    history = audit.read(ctx.store.engine, model_name)
    assert [(h.seq, h.version, h.previous_version, h.reason, h.decided_by) for h in history] == [
        (1, "1", None, "promotion", "gate"),
        (2, "2", "1", "promotion", "gate"),
        (3, "1", "2", "rollback", OUTSIDE),
        (4, "2", "1", "rollback", OUTSIDE),
    ]
    assert "outside uptake" in history[2].detail
    records = read_topic(s.kafka_bootstrap, s.kafka.topics.decisions, expected=6)
    changed = [decode_event(r.value) for r in records]
    changed = [e for e in changed if isinstance(e, ChampionChanged)]
    assert [(e.version, e.previous_version, e.reason) for e in changed] == [
        ("1", None, "promotion"),
        ("2", "1", "promotion"),
        ("1", "2", "rollback"),
        ("2", "1", "rollback"),
    ]


def test_a_holder_whose_lease_lapsed_cannot_move_the_alias(
    mlflow_settings: Settings, worker: Worker, model_name: str
) -> None:
    """Fencing: a promoter that stalled past its lease (a frozen process, a store it could not
    reach) while another took the model over writes nothing when it wakes up."""
    s = configure(mlflow_settings, model=model_name, mode="auto", lease_s=1.0)
    ensure_topics(s)
    reg = Registry(s.tracking_uri)
    with EventProducer(s) as producer:
        stalled, other = make_context(s, producer), make_context(s, producer)
        assert handle_candidate(stalled, worker.register(model_name, GOOD))
        worker.register(model_name, BETTER)
        worker.register(model_name, BEST)
        stalled.locks.heartbeat_s = 3600.0  # it stops renewing, as a frozen process would
        with stalled.locks.hold(model_name):
            started = time.monotonic()
            with other.locks.hold(model_name):  # taken over once the stalled lease lapsed
                assert time.monotonic() - started < 5
                with pytest.raises(ModelLeaseLost, match="lost"):
                    promote(
                        stalled,
                        model_name,
                        "3",
                        expected_champion="1",
                        reason="promotion",
                        decided_by="gate",
                        detail="decided before stalling",
                    )
                assert reg.champion(model_name) == "1"
                assert PREVIOUS_CHAMPION_TAG not in reg.version(model_name, "3").tags
                promote(
                    other,
                    model_name,
                    "2",
                    expected_champion="1",
                    reason="promotion",
                    decided_by="gate",
                    detail="the new holder",
                )
    assert reg.champion(model_name) == "2"
    history = audit.read(other.store.engine, model_name)
    assert [(h.version, h.previous_version) for h in history] == [("1", None), ("2", "1")]

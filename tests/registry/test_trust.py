"""The promoter decides only from MLflow, and only for managed models (DESIGN.md "Trust").

Anyone who can write ``uptake.runs`` can publish a ``candidate.registered``; at most it
causes a DLQ entry or a rejection, never a promotion.
"""

from __future__ import annotations

import uuid

import pytest

from registry.decision_flow import handle_candidate
from registry.evidence import Evidence, event_differences
from registry.mlflow_registry import Registry
from registry.service import PromoterService, make_context
from tests.core.kafka_helpers import read_topic
from tests.registry.conftest import configure
from tests.registry.helpers import BASE, GOOD, Worker, wait_for
from uptake.bus import EventProducer, ensure_topics
from uptake.events import CandidateRegistered, DeadLetter, decode_event
from uptake.settings import Settings

# what this module tests does not depend on the MLflow store: one store (README "Tests")
pytestmark = pytest.mark.one_backend

BEST = {"immigration": [3, 3, 3, 3, 1], "tax": [3, 3, 3, 3, 2]}


def forged(event: CandidateRegistered, **changes: object) -> CandidateRegistered:
    return event.model_copy(update=changes)


def test_forged_unmanaged_and_unscored_candidates_are_never_promoted(
    mlflow_settings: Settings, worker: Worker, model_name: str
) -> None:
    s = configure(mlflow_settings, model=model_name, mode="auto")
    ensure_topics(s)
    reg = Registry(s.tracking_uri)
    with EventProducer(s) as producer:
        first = handle_candidate(make_context(s, producer), worker.register(model_name, GOOD))
        assert first is not None and first.outcome == "promoted"
        # v2 scored as its base (loses to v1); the event claims far better numbers
        weak = worker.register(model_name, BASE)
        lie = forged(weak, all_pass_rate=0.9, criterion_pass_rate=0.95)
        # v3 never had its metrics logged; the event carries winning ones
        unscored = worker.register(model_name, BEST, log_metrics=False)
        # a model uptake does not manage, with a genuine event
        stranger = worker.register(f"not-managed-{uuid.uuid4().hex[:6]}", BEST)
        service = PromoterService(s, alerts=False).start()
        try:
            for event in (lie, unscored, stranger):
                producer.publish(event)
            wait_for(
                lambda: service.ctx.store.decision(model_name, "3", "gate") is not None,
                90,
                "v3 decided",
            )
            wait_for(lambda: service.consumer.stats.dead_lettered >= 2, 60, "two dead letters")
        finally:
            service.stop()

    assert reg.champion(model_name) == "1"
    assert service.ctx.store.decision(model_name, "2", "gate") is None  # not decided at all
    rejected = service.ctx.store.decision(model_name, "3", "gate")
    assert rejected is not None and rejected.outcome == "rejected"
    assert [c.name for c in rejected.checks] == ["candidate_scored"]
    assert "no all_pass_rate" in rejected.reason

    letters = [decode_event(r.value) for r in read_topic(s.kafka_bootstrap, s.kafka.topics.dlq, 2)]
    by_model = {}
    for letter in letters:
        assert isinstance(letter, DeadLetter)
        by_model[CandidateRegistered.model_validate_json(letter.payload).registered_model] = letter
    mismatch = by_model[model_name]
    assert mismatch.attempts == 1  # permanent: not retried
    assert "disagrees with MLflow" in mismatch.error
    assert "all_pass_rate: event 0.9, MLflow 0.2" in mismatch.error
    assert "criterion_pass_rate: event 0.95" in mismatch.error
    assert "run_id" not in mismatch.error and "\n" not in mismatch.error
    unmanaged = by_model[stranger.registered_model]
    assert "is not managed by uptake" in unmanaged.error and model_name in unmanaged.error


def _logged(**fields: object) -> Evidence:
    base = {
        "registered_model": "m",
        "version": "2",
        "run_id": "run-a",
        "release_id": "hf:acme/base@r1",
        "model_uri": "models:/m/2",
        "suite_sha": "s" * 64,
        "all_pass_rate": 0.4,
        "criterion_pass_rate": 0.6,
        "base_all_pass_rate": 0.2,
        "base_criterion_pass_rate": 0.3,
    }
    return Evidence.model_validate({**base, **fields})


def _event(**fields: object) -> CandidateRegistered:
    base = {
        "producer": "someone",
        "release_id": "hf:acme/base@r1",
        "run_id": "run-a",
        "registered_model": "m",
        "version": "2",
        "model_uri": "models:/m/2",
        "suite_sha": "s" * 64,
        "all_pass_rate": 0.4,
        "criterion_pass_rate": 0.6,
        "base_all_pass_rate": 0.2,
        "base_criterion_pass_rate": 0.3,
    }
    return CandidateRegistered.model_validate({**base, **fields})


def test_event_differences_name_each_field_that_disagrees_with_mlflow() -> None:
    assert event_differences(_event(), _logged()) == []
    assert event_differences(_event(base_all_pass_rate=None), _logged()) == []  # not stated
    diffs = event_differences(
        _event(run_id="run-b", release_id="hf:x@y", suite_sha="t" * 64, base_all_pass_rate=0.1),
        _logged(),
    )
    assert [d.split(":")[0] for d in diffs] == [
        "run_id",
        "release_id",
        "suite_sha",
        "base_all_pass_rate",
    ]
    # identity must be in MLflow; a metric MLflow lacks is for the gate to reject
    assert event_differences(_event(), _logged(release_id=None)) == [
        "release_id: event 'hf:acme/base@r1', MLflow None"
    ]
    assert event_differences(_event(), _logged(all_pass_rate=None, suite_sha=None)) == []

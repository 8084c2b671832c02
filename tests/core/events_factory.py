"""One valid instance of every event type, for round-trip tests."""

from __future__ import annotations

from uptake.events import (
    AlertRaised,
    CandidateRegistered,
    ChampionChanged,
    DeadLetter,
    Event,
    GateCheck,
    PromotionDecided,
    ReleaseDetected,
    RunFailed,
    RunStage,
    RunStarted,
    release_id,
)

RID = release_id("hf", "acme/base-7b", "0123abcd")


def one_of_each() -> list[Event]:
    return [
        ReleaseDetected(
            release_id=RID,
            source="hf",
            repo_id="acme/base-7b",
            revision="0123abcd",
            license="apache-2.0",
            pipeline_tag="text-generation",
            num_parameters=7_000_000_000,
        ),
        RunStarted(
            release_id=RID, base_model="acme/base-7b", base_revision="0123abcd", worker="w1"
        ),
        RunStage(
            release_id=RID, stage="train", step=10, total_steps=100, loss=1.5, tokens_per_s=900.0
        ),
        RunFailed(release_id=RID, stage="preflight", reason="requires trust_remote_code"),
        CandidateRegistered(
            release_id=RID,
            registered_model="uptake-legal",
            version="3",
            model_uri="models:/uptake-legal/3",
            suite_sha="ab" * 32,
            all_pass_rate=0.058,
            criterion_pass_rate=0.83,
        ),
        PromotionDecided(
            registered_model="uptake-legal",
            version="3",
            release_id=RID,
            outcome="promoted",
            reason="beats champion",
            checks=[GateCheck(name="all_pass_rate", passed=True, value=0.058, threshold=0.0)],
        ),
        ChampionChanged(
            registered_model="uptake-legal",
            version="3",
            previous_version="2",
            model_uri="models:/uptake-legal/3",
        ),
        DeadLetter(
            origin_topic="uptake.runs",
            origin_partition=0,
            origin_offset=7,
            origin_key="k",
            consumer_group="g",
            error_kind="invalid_json",
            error="bad",
            payload="{",
        ),
        AlertRaised(
            component="watcher:hf",
            condition="source_failing",
            severity="error",
            summary="hub source hf failed 5 times in a row",
            details={"last_error": "HTTP 503"},
        ),
    ]

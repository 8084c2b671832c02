"""Which events are worth an alert, how severe, and under which dedup key.

A condition that can clear has a stable key, and the event that clears it resolves the
same key: a failed release (``uptake/run_failed/<release id>``) is resolved when that release
later registers a candidate; a pending approval is resolved when it is decided; a watcher
``alert.raised`` by its component + condition. One-off notices (promotion, rollback, a
rejected candidate) carry the event id in their key. Dead letters keep one key per message;
``alerts.grouping`` (grouping.py) folds them into one incident per consumer group, topic and
error kind.
"""

from __future__ import annotations

from urllib.parse import quote

from registry.alerts.model import Alert, Link
from uptake.events import (
    AlertRaised,
    CandidateRegistered,
    ChampionChanged,
    DeadLetter,
    Event,
    PromotionDecided,
    RunFailed,
)
from uptake.registry_config import AlertSettings
from uptake.urls import redact_userinfo

ACCEPTED: tuple[type[Event], ...] = (
    RunFailed,
    CandidateRegistered,
    PromotionDecided,
    ChampionChanged,
    DeadLetter,
    AlertRaised,
)


def run_failed_key(release_id: str) -> str:
    return f"uptake/run_failed/{release_id}"


def approval_key(model: str, version: str) -> str:
    return f"uptake/approval/{model}/{version}"


def version_link(mlflow_url: str | None, model: str, version: str) -> list[Link]:
    if not mlflow_url:
        return []
    base = redact_userinfo(mlflow_url).rstrip("/")  # the tracking URI may hold a password
    href = f"{base}/#/models/{quote(model, safe='')}/versions/{version}"
    return [Link(href=href, text=f"{model} v{version} in MLflow")]


def alerts_for(event: Event, cfg: AlertSettings, mlflow_url: str | None = None) -> list[Alert]:
    """The alerts (triggers and resolves) an event causes; [] for the uninteresting ones."""
    common = {
        "event_id": event.event_id,
        "event_type": event.type,
        "occurred_at": event.occurred_at,
    }
    if isinstance(event, RunFailed):
        return [
            Alert(
                kind="run_failed",
                severity=cfg.severity_of("run_failed"),
                dedup_key=run_failed_key(event.release_id),
                summary=f"uptake run failed at {event.stage} for {event.release_id}: "
                f"{event.reason}",
                source=event.producer,
                details={
                    "release_id": event.release_id,
                    "stage": event.stage,
                    "reason": event.reason,
                    "retryable": str(event.retryable).lower(),
                    "run_id": event.run_id or "",
                },
                **common,
            )
        ]
    if isinstance(event, CandidateRegistered):  # the release succeeded after all
        return [
            Alert(
                kind="run_failed",
                severity=cfg.severity_of("run_failed"),
                action="resolve",
                dedup_key=run_failed_key(event.release_id),
                summary=f"{event.release_id} succeeded: registered as {event.registered_model} "
                f"v{event.version}",
                source=event.producer,
                details={"release_id": event.release_id, "version": event.version},
                **common,
            )
        ]
    if isinstance(event, PromotionDecided):
        return _decision_alerts(event, cfg, mlflow_url, common)
    if isinstance(event, ChampionChanged):
        kind = "rollback" if event.reason == "rollback" else "promoted"
        verb = "rolled back to" if kind == "rollback" else "promoted"
        return [
            Alert(
                kind=kind,
                severity=cfg.severity_of(kind),
                dedup_key=f"uptake/{kind}/{event.registered_model}/{event.event_id}",
                summary=f"{event.registered_model}: champion {verb} v{event.version} "
                f"(was v{event.previous_version or '-'})",
                source=event.producer,
                details={
                    "registered_model": event.registered_model,
                    "version": event.version,
                    "previous_version": event.previous_version or "",
                    "model_uri": event.model_uri,
                },
                links=version_link(mlflow_url, event.registered_model, event.version),
                **common,
            )
        ]
    if isinstance(event, DeadLetter):
        where = f"{event.origin_topic}[{event.origin_partition}]@{event.origin_offset}"
        return [
            Alert(
                kind="dead_letter",
                severity=cfg.severity_of("dead_letter"),
                dedup_key=f"uptake/dead_letter/{where}",
                summary=f"message {where} dead-lettered by {event.consumer_group}: "
                f"{event.error_kind}: {event.error}",
                source=event.consumer_group,
                details={
                    "origin": where,
                    "topic": event.origin_topic,  # with the next two: the default grouping
                    "key": event.origin_key or "",
                    "consumer_group": event.consumer_group,
                    "error_kind": event.error_kind,
                    "error": event.error,
                    "attempts": str(event.attempts),
                },
                **common,
            )
        ]
    if isinstance(event, AlertRaised):
        return [
            Alert(
                kind="service",
                severity=event.severity,
                action="resolve" if event.resolved else "trigger",
                dedup_key=f"uptake/{event.component}/{event.condition}",
                summary=event.summary,
                source=event.component,
                details=dict(event.details),
                **common,
            )
        ]
    return []


def _decision_alerts(
    event: PromotionDecided, cfg: AlertSettings, mlflow_url: str | None, common: dict
) -> list[Alert]:
    model, version = event.registered_model, event.version
    links = version_link(mlflow_url, model, version)
    if event.outcome == "pending_approval":
        failed = [c.name for c in event.checks if not c.passed]
        return [
            Alert(
                kind="pending_approval",
                severity=cfg.severity_of("pending_approval"),
                dedup_key=approval_key(model, version),
                summary=f"{model} v{version} passed the gate and waits for approval: set its "
                "tag approval=approved (or rejected) in MLflow",
                source=event.producer,
                details={
                    "registered_model": model,
                    "version": version,
                    "release_id": event.release_id,
                    "reason": event.reason,
                    "failed_checks": ", ".join(failed),
                },
                links=links,
                **common,
            )
        ]
    out: list[Alert] = []
    if event.decided_by.startswith("approval:"):  # a pending approval was answered
        out.append(
            Alert(
                kind="pending_approval",
                severity=cfg.severity_of("pending_approval"),
                action="resolve",
                dedup_key=approval_key(model, version),
                summary=f"{model} v{version}: {event.outcome} ({event.decided_by})",
                source=event.producer,
                details={"registered_model": model, "version": version},
                links=links,
                **common,
            )
        )
    if event.outcome == "rejected":
        out.append(
            Alert(
                kind="rejected",
                severity=cfg.severity_of("rejected"),
                dedup_key=f"uptake/rejected/{model}/{version}/{event.event_id}",
                summary=f"{model} v{version} was not promoted: {event.reason}",
                source=event.producer,
                details={
                    "registered_model": model,
                    "version": version,
                    "release_id": event.release_id,
                    "decided_by": event.decided_by,
                },
                links=links,
                **common,
            )
        )
    return out

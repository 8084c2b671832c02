"""Event contracts between the services (DESIGN.md "Event flow").

Every event is a pydantic model with ``event_id``, ``type``, ``schema_version``,
``occurred_at`` (UTC) and ``producer``. Values travel as JSON. A consumer decodes with
``decode_event``; anything it cannot trust (bad JSON, unknown type, a newer schema version
than this code knows, a field that fails validation) raises ``EventDecodeError`` and the bus
routes the message to the DLQ instead of crashing or silently skipping it. That holds for any
input at all (deep nesting, integers past Python's digit limit, lone surrogates, dates that
overflow): ``decode_event`` raises nothing else, which ``tests/core/test_fuzz_events.py`` checks.
"""

from __future__ import annotations

import json
import uuid
from abc import abstractmethod
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticSerializationError

from uptake.errors import InputError, describe_validation_error

MAX_REASON_CHARS = 2_000  # a decode error names the problem; it never echoes a whole message


class EventDecodeError(InputError, ValueError):
    """A message that cannot be turned into a known event; ``reason`` says why (for the DLQ)."""

    def __init__(self, reason: str, kind: str) -> None:
        if len(reason) > MAX_REASON_CHARS:
            reason = f"{reason[:MAX_REASON_CHARS]}… ({len(reason) - MAX_REASON_CHARS} more chars)"
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # invalid_json | unknown_type | unsupported_schema_version | invalid_event


def _now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Fields every event carries. Subclasses set ``type`` and ``SCHEMA_VERSION``.

    Numbers are finite: JSON has no NaN or infinity (Python writes them as bare ``NaN`` and
    ``Infinity`` tokens other readers reject, and pydantic writes ``null``, so an event would
    not survive its own round trip); such an event is refused like any malformed one."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    SCHEMA_VERSION: ClassVar[int] = 1
    TOPIC: ClassVar[str]  # logical topic: releases | runs | decisions | dlq

    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    type: str
    schema_version: int = 1
    occurred_at: AwareDatetime = Field(default_factory=_now)
    producer: str = "uptake"

    @field_validator("occurred_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        try:
            return value.astimezone(UTC)
        except OverflowError:  # 9999-12-31T23:59-23:59 is valid ISO but has no UTC form
            raise ValueError("timestamp out of range once converted to UTC") from None

    @abstractmethod
    def key(self) -> str:
        """The Kafka key (DESIGN.md): orders events of one release / model on one partition."""

    def to_json(self) -> bytes:
        return self.model_dump_json().encode("utf-8")


def release_id(source: str, repo_id: str, revision: str) -> str:
    """The end-to-end idempotency key: ``{source}:{repo_id}@{revision}``."""
    return f"{source}:{repo_id}@{revision}"


# --- uptake.releases ------------------------------------------------------------------------


class ReleaseDetected(Event):
    """A new base model (or a new revision of a watched one) worth adopting."""

    TOPIC: ClassVar[str] = "releases"
    type: Literal["release.detected"] = "release.detected"
    release_id: str
    source: str
    repo_id: str
    revision: str
    endpoint: str | None = None  # hub endpoint or directory the weights come from
    created_at: datetime | None = None
    license: str | None = None
    pipeline_tag: str | None = None
    library: str | None = None
    num_parameters: int | None = None
    requires_remote_code: bool = False
    gated: bool = False

    def key(self) -> str:
        return self.repo_id


# --- uptake.runs ----------------------------------------------------------------------------


class RunEvent(Event):
    """Base for run events: keyed by release id so a release's events stay in order."""

    TOPIC: ClassVar[str] = "runs"
    release_id: str
    run_id: str | None = None  # MLflow run id once it exists

    def key(self) -> str:
        return self.release_id


class RunStarted(RunEvent):
    type: Literal["run.started"] = "run.started"
    base_model: str
    base_revision: str
    worker: str
    attempt: int = Field(1, ge=1)
    track: str | None = None


class RunStage(RunEvent):
    """Progress of a long job (training step, evaluation progress)."""

    type: Literal["run.stage"] = "run.stage"
    # the worker's stages (mlflow_contract.WORKER_STAGES), in the order they run
    stage: Literal["fetch", "preflight", "holdout", "baseline", "train", "evaluate", "register"]
    track: str | None = None  # the adoption track the job belongs to
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = Field(None, ge=0)
    message: str | None = None
    reward_mean: float | None = None  # an RL stage's latest rollout reward mean (the rubric's)


class RunFailed(RunEvent):
    type: Literal["run.failed"] = "run.failed"
    stage: str
    reason: str
    retryable: bool = False  # true: another attempt follows; false: the release's last word
    track: str | None = None
    run_url: str | None = None  # the MLflow run's page, for the alerter's message
    attempts: int = Field(1, ge=1)  # attempts of this job so far (the worker's retry window)


class CandidateRegistered(RunEvent):
    """A post-trained, evaluated model registered as a new version of the registered model."""

    type: Literal["candidate.registered"] = "candidate.registered"
    registered_model: str
    version: str
    model_uri: str
    suite_sha: str
    all_pass_rate: float = Field(ge=0, le=1)
    criterion_pass_rate: float = Field(ge=0, le=1)
    base_all_pass_rate: float | None = Field(None, ge=0, le=1)
    base_criterion_pass_rate: float | None = Field(None, ge=0, le=1)


# --- uptake.decisions ------------------------------------------------------------------------


class GateCheck(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    passed: bool
    value: float | None = None
    threshold: float | None = None
    detail: str | None = None


class PromotionDecided(Event):
    TOPIC: ClassVar[str] = "decisions"
    type: Literal["promotion.decided"] = "promotion.decided"
    registered_model: str
    version: str
    release_id: str
    outcome: Literal["promoted", "rejected", "pending_approval"]
    reason: str
    checks: list[GateCheck] = Field(default_factory=list)
    decided_by: str = "gate"

    def key(self) -> str:
        return self.registered_model


class ChampionChanged(Event):
    TOPIC: ClassVar[str] = "decisions"
    type: Literal["champion.changed"] = "champion.changed"
    registered_model: str
    version: str
    previous_version: str | None = None
    model_uri: str
    reason: Literal["promotion", "rollback"] = "promotion"

    def key(self) -> str:
        return self.registered_model


# --- uptake.dlq -----------------------------------------------------------------------------


class DeadLetter(Event):
    """A message a consumer could not handle, with where it came from and why.

    Bounded so that any message, however large or binary, can be dead-lettered (docs/bus.md
    "Dead letters"): ``payload`` holds only the first 64 KiB of the original value, as UTF-8
    text when those bytes are valid UTF-8 and as base64 otherwise; ``payload_size`` and
    ``payload_sha256`` describe the whole original. Version 2 added the ``payload_*`` fields
    and ``origin_key_truncated``; a version-1 letter still decodes (they take their defaults).
    """

    SCHEMA_VERSION: ClassVar[int] = 2
    TOPIC: ClassVar[str] = "dlq"
    type: Literal["dead.letter"] = "dead.letter"
    schema_version: int = 2
    origin_topic: str
    origin_partition: int
    origin_offset: int
    origin_key: str | None = None  # first 1 KiB of the key, undecodable bytes as \xNN
    origin_key_truncated: bool = False
    consumer_group: str
    error_kind: str
    error: str
    attempts: int = 1
    payload: str  # the stored part of the original value, in ``payload_encoding``
    payload_encoding: Literal["utf-8", "base64", "omitted"] = "utf-8"
    payload_size: int | None = None  # bytes in the original value; None: a tombstone
    payload_sha256: str | None = None  # of the whole original value
    payload_truncated: bool = False  # ``payload`` holds only a prefix (or nothing) of it

    def key(self) -> str:
        return self.origin_key or f"{self.origin_topic}:{self.origin_partition}"


# --- health alerts (published on uptake.releases by default) --------------------------------


class AlertRaised(Event):
    """A condition on-call should hear about that no other event describes (a hub source that
    failed N times in a row, say). The watcher publishes it next to its releases, on
    ``uptake.releases``; the alerter delivers it. ``resolved=True`` clears the condition: the
    alerter resolves the open incident with the same dedup key (component + condition).
    """

    TOPIC: ClassVar[str] = "releases"
    type: Literal["alert.raised"] = "alert.raised"
    component: str  # who noticed: "watcher", "watcher:hf"
    condition: str  # stable name of the condition: "source_failing"
    severity: Literal["info", "warning", "error", "critical"] = "warning"
    summary: str
    details: dict[str, str] = Field(default_factory=dict)
    resolved: bool = False

    def key(self) -> str:
        return f"{self.component}:{self.condition}"


EVENT_TYPES: dict[str, type[Event]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        ReleaseDetected,
        RunStarted,
        RunStage,
        RunFailed,
        CandidateRegistered,
        PromotionDecided,
        ChampionChanged,
        DeadLetter,
        AlertRaised,
    )
}


def decode_event(value: bytes | str | None) -> Event:
    """Parse and validate one message value; raise ``EventDecodeError`` if it is not trusted."""
    if value is None:
        raise EventDecodeError("empty message value (tombstone)", "invalid_json")
    try:
        data: Any = json.loads(value)
    except RecursionError:  # e.g. 100,000 "[": nesting deeper than the parser's stack
        raise EventDecodeError("invalid JSON: nested too deeply", "invalid_json") from None
    except ValueError as exc:  # bad JSON, bad UTF-8, an integer past the int-string limit
        raise EventDecodeError(f"invalid JSON: {exc}", "invalid_json") from None
    if not isinstance(data, dict):
        raise EventDecodeError(
            f"event must be a JSON object, got {type(data).__name__}", "invalid_event"
        )
    type_name = data.get("type")
    cls = EVENT_TYPES.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise EventDecodeError(f"unknown event type {type_name!r}", "unknown_type")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise EventDecodeError(f"invalid schema_version {version!r}", "invalid_event")
    if version > cls.SCHEMA_VERSION:
        raise EventDecodeError(
            f"{type_name} schema_version {version} is newer than supported "
            f"{cls.SCHEMA_VERSION}; upgrade this consumer",
            "unsupported_schema_version",
        )
    try:
        event = cls.model_validate(data)
    except ValidationError as exc:
        raise EventDecodeError(
            f"invalid {type_name}: {describe_validation_error(exc)}", "invalid_event"
        ) from None
    try:  # what we accept we can write again (to the DLQ, in a follow-up event)
        event.to_json()
    except PydanticSerializationError as exc:  # a lone surrogate ("\ud800") in a string
        raise EventDecodeError(
            f"invalid {type_name}: not encodable as UTF-8 JSON ({exc})", "invalid_event"
        ) from None
    return event

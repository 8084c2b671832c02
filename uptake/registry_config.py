"""Settings of the registry (promotion gate, approvals, state store) and of on-call alerts.

They live in ``uptake/`` because ``uptake status`` and the CLI read them too. Alert channel
secrets (Slack webhook URL, PagerDuty routing key, webhook HMAC key) never appear in the YAML
file: a channel names the environment variable that holds its secret (``*_env`` fields), and
there is no field in which the secret itself could be written.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import Field, model_validator

from uptake.config_model import ConfigModel

Mode = Literal["auto", "manual"]
Severity = Literal["info", "warning", "error", "critical"]
SEVERITY_ORDER: dict[str, int] = {"info": 0, "warning": 1, "error": 2, "critical": 3}


AlertKind = Literal[
    "run_failed", "dead_letter", "pending_approval", "promoted", "rejected", "rollback", "service"
]


class SignificanceConfig(ConfigModel):
    """Optional: the paired difference against the champion must be significant."""

    test: Literal["mcnemar", "bootstrap"] = Field(
        "mcnemar",
        description="`mcnemar` (exact, on discordant all-pass tasks) or `bootstrap` (paired).",
    )
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level.")
    bootstrap_samples: int = Field(2000, ge=100, description="Resamples of the bootstrap test.")
    seed: int = Field(0, description="Seed of the bootstrap resampling.")


class GateConfig(ConfigModel):
    """The promotion rule of DESIGN.md "Promotion gate" for one registered model."""

    mode: Mode = Field(
        "auto",
        description="`auto`: a passing candidate is promoted; `manual`: it waits for approval.",
    )
    all_pass_margin: float = Field(
        0.0, ge=0, le=1, description="Candidate minus champion all-pass rate must exceed this."
    )
    criterion_margin: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Candidate minus champion criterion pass rate must exceed this.",
    )
    area_tolerance: float = Field(
        0.05, ge=0, le=1, description="Largest allowed drop of any practice area's all-pass rate."
    )
    beat_base: bool = Field(True, description="The candidate must also beat its own base model.")
    base_margin: float = Field(
        0.0, ge=0, le=1, description="Candidate minus base must exceed this (both rates)."
    )
    significance: SignificanceConfig | None = Field(
        None, description="A significance test against the champion; null: none."
    )


class GateOverride(ConfigModel):
    """Per-model changes to ``registry.gate``: unset fields keep the default gate's values."""

    mode: Mode | None = Field(None, description="Overrides `registry.gate.mode`.")
    all_pass_margin: float | None = Field(
        None, ge=0, le=1, description="Overrides `registry.gate.all_pass_margin`."
    )
    criterion_margin: float | None = Field(
        None, ge=0, le=1, description="Overrides `registry.gate.criterion_margin`."
    )
    area_tolerance: float | None = Field(
        None, ge=0, le=1, description="Overrides `registry.gate.area_tolerance`."
    )
    beat_base: bool | None = Field(None, description="Overrides `registry.gate.beat_base`.")
    base_margin: float | None = Field(
        None, ge=0, le=1, description="Overrides `registry.gate.base_margin`."
    )
    significance: SignificanceConfig | None = Field(
        None, description="Overrides `registry.gate.significance`."
    )


class WebhookReceiverConfig(ConfigModel):
    """Where MLflow's ``model_version_tag.set`` deliveries reach the promoter."""

    enabled: bool = Field(
        True, description="Run the receiver at all (the reconcile loop works without it)."
    )
    manage: bool = Field(
        True, description="Create or update the MLflow webhook on start, delete it on stop."
    )
    host: str = Field("127.0.0.1", description="Address the receiver binds.")
    port: int = Field(0, ge=0, le=65535, description="Port of the receiver; 0: any free port.")
    public_url: str | None = Field(
        None, description="What MLflow posts to; null: `http://<host>:<port>/hooks/mlflow`."
    )
    name: str = Field(
        "uptake-promoter", description="Name of the MLflow webhook this promoter owns."
    )
    max_age_s: float = Field(
        300.0, gt=0, description="Seconds; older deliveries are refused as replays."
    )


class RegistrySettings(ConfigModel):
    """The promoter: its gate, state store, leases and MLflow webhook receiver."""

    gate: GateConfig = Field(GateConfig(), description="The promotion gate of every model.")
    models: dict[str, GateOverride] = Field(
        default_factory=dict, description="Per registered model: the gate fields it changes."
    )
    reconcile_interval_s: float = Field(
        30.0, gt=0, description="Seconds between passes that catch lost events and approvals."
    )
    adopt_after_s: float | None = Field(
        600.0,
        ge=0,
        description="Seconds after which a worker-registered version still undecided is decided "
        "by the reconcile loop (its event went astray); null: never.",
    )
    state_url: str | None = Field(
        None, description="SQLAlchemy URL of the state store; null: SQLite under `home`."
    )
    consumer_group: str = Field("uptake-promoter", description="Consumer group of the promoter.")
    lease_s: float = Field(
        60.0,
        gt=0,
        description="Seconds a promoter's hold on a model lasts unless renewed (every third).",
    )
    lock_timeout_s: float = Field(
        120.0, gt=0, description="Seconds to wait for another promoter's hold on a model."
    )
    mlflow_timeout_s: int = Field(
        20,
        ge=1,
        le=600,
        description="Seconds per MLflow request attempt (`MLFLOW_HTTP_REQUEST_TIMEOUT`).",
    )
    mlflow_max_retries: int = Field(
        2,
        ge=0,
        le=10,
        description="`MLFLOW_HTTP_REQUEST_MAX_RETRIES` (MLflow's own default retries ~4 min).",
    )
    mlflow_backoff_factor: int = Field(
        1,
        ge=0,
        le=120,
        description="`MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR` of those retries, seconds.",
    )
    webhook: WebhookReceiverConfig = Field(
        WebhookReceiverConfig(), description="Receiver of MLflow's registry webhook."
    )

    def gate_for(self, model: str) -> GateConfig:
        override = self.models.get(model)
        if override is None:
            return self.gate
        changes = override.model_dump(exclude_none=True)
        return self.gate.model_copy(update=changes)


# --- alerts --------------------------------------------------------------------------------


class _Channel(ConfigModel):
    min_severity: Severity = Field("info", description="Least severity sent to this channel.")
    kinds: list[AlertKind] | None = Field(
        None, description="Only these alert kinds; null: every kind."
    )
    timeout_s: float = Field(5.0, gt=0, description="Seconds per delivery attempt, as a whole.")


class SlackChannel(_Channel):
    """Slack incoming webhook: its URL is the secret, so only the env var name is configured."""

    type: Literal["slack"] = Field("slack", description="Channel type.")
    url_env: str = Field(
        "UPTAKE_SLACK_WEBHOOK_URL", description="Env var holding the incoming-webhook URL."
    )


class PagerDutyChannel(_Channel):
    """PagerDuty Events API v2 (trigger / resolve with a stable dedup_key)."""

    type: Literal["pagerduty"] = Field("pagerduty", description="Channel type.")
    routing_key_env: str = Field(
        "UPTAKE_PAGERDUTY_ROUTING_KEY", description="Env var holding the routing key."
    )
    events_url: str = Field(
        "https://events.pagerduty.com/v2/enqueue", description="The Events API v2 endpoint."
    )
    min_severity: Severity = Field("error", description="Least severity sent to this channel.")


class WebhookChannel(_Channel):
    """Generic JSON webhook; optionally HMAC-signed (``X-Uptake-Signature``)."""

    type: Literal["webhook"] = Field("webhook", description="Channel type.")
    url: str | None = Field(None, description="Where to post; set this or `url_env`.")
    url_env: str | None = Field(
        None, description="Env var holding the URL, when it carries a token."
    )
    secret_env: str | None = Field(
        None, description="Env var holding the HMAC key; null: deliveries are not signed."
    )

    @model_validator(mode="after")
    def _one_url(self) -> WebhookChannel:
        if bool(self.url) == bool(self.url_env):
            raise ValueError("set exactly one of url and url_env")
        return self


Channel = Annotated[SlackChannel | PagerDutyChannel | WebhookChannel, Field(discriminator="type")]

DEFAULT_SEVERITIES: dict[str, Severity] = {
    "run_failed": "error",
    "dead_letter": "warning",
    "pending_approval": "info",
    "promoted": "info",
    "rejected": "info",
    "rollback": "warning",
}


class AlertGrouping(ConfigModel):
    """Alertmanager-style grouping: alerts of one kind that share the ``group_by`` details are
    one incident. The first notification waits ``group_wait_s`` to collect the burst, updates
    (with the count) come at most every ``group_interval_s``, an unchanged open group is
    re-sent every ``repeat_interval_s``, and ``resolve_after_s`` without a new alert resolves it.
    """

    group_by: list[str] = Field(
        default_factory=lambda: ["consumer_group", "topic", "error_kind"],
        min_length=1,
        description="Alert details whose values together name a group.",
    )
    group_wait_s: float = Field(
        30.0, ge=0, description="Seconds from a group's first alert to its first notification."
    )
    group_interval_s: float = Field(
        300.0, gt=0, description="Least seconds between notifications of a growing group."
    )
    repeat_interval_s: float = Field(
        14_400.0, gt=0, description="Seconds after which an unchanged open group is re-sent."
    )
    resolve_after_s: float = Field(
        900.0, gt=0, description="Seconds without a new alert after which a group resolves."
    )
    max_examples: int = Field(
        5, ge=1, le=50, description="The latest alerts shown in a notification."
    )


def _default_grouping() -> dict[AlertKind, AlertGrouping]:
    return {"dead_letter": AlertGrouping()}


class AlertSettings(ConfigModel):
    """The alerter: where alerts go, how they are grouped, retried and de-duplicated."""

    channels: dict[str, Channel] = Field(
        default_factory=dict, description="Alert channels by name: slack, pagerduty or webhook."
    )
    grouping: dict[AlertKind, AlertGrouping] = Field(
        default_factory=_default_grouping,
        description="Grouping rule per alert kind; {}: no grouping. By default 1,000 dead "
        "letters page once, with the count.",
    )
    severities: dict[AlertKind, Severity] = Field(
        default_factory=dict, description="Severity per alert kind, over the defaults."
    )
    max_attempts: int = Field(5, ge=1, description="Delivery attempts per alert and channel.")
    backoff_s: float = Field(
        1.0, ge=0, description="Seconds before the second attempt; doubled each attempt."
    )
    backoff_max_s: float = Field(60.0, ge=0, description="Cap of that backoff, seconds.")
    dedup_window_s: float = Field(
        3600.0, ge=0, description="Seconds an open condition suppresses the same alert again."
    )
    consumer_group: str = Field("uptake-alerter", description="Consumer group of the alerter.")
    public_mlflow_url: str | None = Field(
        None, description="MLflow URL in alert links; null: the tracking URI."
    )

    def severity_of(self, kind: str, default: Severity = "warning") -> Severity:
        """The configured severity of an alert kind (``service`` alerts bring their own)."""
        configured: dict[str, Severity] = dict(DEFAULT_SEVERITIES)
        configured.update(self.severities.items())
        return configured.get(kind, default)


def secret_from_env(name: str | None) -> str | None:
    """A channel secret, read when needed (never stored in settings or logs)."""
    if not name:
        return None
    value = os.environ.get(name, "").strip()
    return value or None

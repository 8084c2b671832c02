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

    test: Literal["mcnemar", "bootstrap"] = "mcnemar"
    alpha: float = Field(0.05, gt=0, lt=1)
    bootstrap_samples: int = Field(2000, ge=100)
    seed: int = 0


class GateConfig(ConfigModel):
    """The promotion rule of DESIGN.md "Promotion gate" for one registered model."""

    mode: Mode = "auto"
    all_pass_margin: float = Field(0.0, ge=0, le=1)  # candidate - champion must exceed this
    criterion_margin: float = Field(0.0, ge=0, le=1)
    area_tolerance: float = Field(0.05, ge=0, le=1)  # largest allowed per-area all-pass drop
    beat_base: bool = True  # must beat its own base model on both rates
    base_margin: float = Field(0.0, ge=0, le=1)
    significance: SignificanceConfig | None = None


class GateOverride(ConfigModel):
    """Per-model changes to ``registry.gate``: unset fields keep the default gate's values."""

    mode: Mode | None = None
    all_pass_margin: float | None = Field(None, ge=0, le=1)
    criterion_margin: float | None = Field(None, ge=0, le=1)
    area_tolerance: float | None = Field(None, ge=0, le=1)
    beat_base: bool | None = None
    base_margin: float | None = Field(None, ge=0, le=1)
    significance: SignificanceConfig | None = None


class WebhookReceiverConfig(ConfigModel):
    """Where MLflow's ``model_version_tag.set`` deliveries reach the promoter."""

    enabled: bool = True  # run the receiver at all (the reconcile loop works without it)
    manage: bool = True  # create/update the MLflow webhook on start, delete it on stop
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)  # 0: any free port (local stack)
    public_url: str | None = None  # what MLflow posts to; default http://host:port/hooks/mlflow
    name: str = "uptake-promoter"  # the MLflow webhook this promoter owns
    max_age_s: float = Field(300.0, gt=0)  # older deliveries are refused as replays


class RegistrySettings(ConfigModel):
    gate: GateConfig = GateConfig()
    models: dict[str, GateOverride] = Field(default_factory=dict)
    reconcile_interval_s: float = Field(30.0, gt=0)
    # a version the worker registered (tag uptake.release_id) that is still undecided this
    # long after creation is decided by the reconcile loop (its event went astray); None: off
    adopt_after_s: float | None = Field(600.0, ge=0)
    state_url: str | None = None  # default: sqlite:///<home>/registry/registry.db
    consumer_group: str = "uptake-promoter"
    lease_s: float = Field(60.0, gt=0)  # a lease not renewed (heartbeat: lease_s/3) expires
    lock_timeout_s: float = Field(120.0, gt=0)
    # bounds on each MLflow request of the promoter (MLflow's own default retries ~4 min)
    mlflow_timeout_s: int = Field(20, ge=1, le=600)
    mlflow_max_retries: int = Field(2, ge=0, le=10)
    mlflow_backoff_factor: int = Field(1, ge=0, le=120)
    webhook: WebhookReceiverConfig = WebhookReceiverConfig()

    def gate_for(self, model: str) -> GateConfig:
        override = self.models.get(model)
        if override is None:
            return self.gate
        changes = override.model_dump(exclude_none=True)
        return self.gate.model_copy(update=changes)


# --- alerts --------------------------------------------------------------------------------


class _Channel(ConfigModel):
    min_severity: Severity = "info"
    kinds: list[AlertKind] | None = None  # only these alert kinds; None = every kind
    timeout_s: float = Field(5.0, gt=0)


class SlackChannel(_Channel):
    """Slack incoming webhook: its URL is the secret, so only the env var name is configured."""

    type: Literal["slack"] = "slack"
    url_env: str = "UPTAKE_SLACK_WEBHOOK_URL"


class PagerDutyChannel(_Channel):
    """PagerDuty Events API v2 (trigger / resolve with a stable dedup_key)."""

    type: Literal["pagerduty"] = "pagerduty"
    routing_key_env: str = "UPTAKE_PAGERDUTY_ROUTING_KEY"
    events_url: str = "https://events.pagerduty.com/v2/enqueue"
    min_severity: Severity = "error"


class WebhookChannel(_Channel):
    """Generic JSON webhook; optionally HMAC-signed (``X-Uptake-Signature``)."""

    type: Literal["webhook"] = "webhook"
    url: str | None = None
    url_env: str | None = None  # use instead of ``url`` when the URL carries a token
    secret_env: str | None = None

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
        default_factory=lambda: ["consumer_group", "topic", "error_kind"], min_length=1
    )
    group_wait_s: float = Field(30.0, ge=0)
    group_interval_s: float = Field(300.0, gt=0)
    repeat_interval_s: float = Field(14_400.0, gt=0)
    resolve_after_s: float = Field(900.0, gt=0)
    max_examples: int = Field(5, ge=1, le=50)  # the latest alerts shown in a notification


def _default_grouping() -> dict[AlertKind, AlertGrouping]:
    """Dead letters are grouped by default: 1,000 bad messages page once, with the count."""
    return {"dead_letter": AlertGrouping()}


class AlertSettings(ConfigModel):
    channels: dict[str, Channel] = Field(default_factory=dict)
    # per alert kind; dead letters by default (1,000 bad messages page once, with the count)
    grouping: dict[AlertKind, AlertGrouping] = Field(default_factory=_default_grouping)
    severities: dict[AlertKind, Severity] = Field(default_factory=dict)  # over the defaults
    max_attempts: int = Field(5, ge=1)
    backoff_s: float = Field(1.0, ge=0)  # doubled each attempt
    backoff_max_s: float = Field(60.0, ge=0)
    dedup_window_s: float = Field(3600.0, ge=0)
    consumer_group: str = "uptake-alerter"
    public_mlflow_url: str | None = None  # for links in messages; default: the tracking URI

    def severity_of(self, kind: str, default: Severity = "warning") -> Severity:
        """The configured severity of an alert kind (``service`` alerts bring their own)."""
        configured: dict[str, Severity] = {**DEFAULT_SEVERITIES}
        configured.update(dict(self.severities.items()))
        return configured.get(kind, default)


def secret_from_env(name: str | None) -> str | None:
    """A channel secret, read when needed (never stored in settings or logs)."""
    if not name:
        return None
    value = os.environ.get(name, "").strip()
    return value or None

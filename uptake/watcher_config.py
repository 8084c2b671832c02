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

    include: list[str] = Field(default_factory=list)  # repo-id globs; empty: every name
    exclude: list[str] = Field(default_factory=list)  # repo-id globs, e.g. "*-GGUF"
    pipeline_tags: list[str] = Field(default_factory=list)
    libraries: list[str] = Field(default_factory=list)
    licenses: list[str] = Field(default_factory=list)
    max_params: int | None = Field(None, gt=0)
    skip_quantized: bool = True  # GGUF/AWQ/GPTQ/FP8/bitsandbytes tags or a quantization_config
    skip_remote_code: bool = False  # default: publish, marked requires_remote_code
    # private repos are seen only through a source's token (an org's own work in progress);
    # adopting them is opt-in
    skip_private: bool = True


class _SourceBase(ConfigModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    interval_s: float = Field(300.0, gt=0)  # between polls
    backfill: int = Field(0, ge=0)  # first run: publish the N newest accepted repos
    track_updates: bool = False  # also publish a new revision of a repo already seen
    settle_s: float = Field(86_400.0, gt=0)  # how long an incomplete-looking repo is re-checked
    filters: Filters = Filters()


class HfSourceConfig(_SourceBase):
    """The Hugging Face Hub or any HF-compatible endpoint (mirror, Artifactory, Nexus)."""

    kind: Literal["hf"]
    endpoint: str = Field("https://huggingface.co", pattern=r"^https?://[^/\s]+(/\S*)?$")
    authors: list[str] = Field(default_factory=list)
    search: str | None = None
    token_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    limit: int = Field(100, ge=1, le=1000)  # newest repos listed per author and poll
    concurrency: int = Field(4, ge=1, le=32)  # authors listed in parallel within one poll
    timeout_s: float = Field(30.0, gt=0)  # per HTTP request, as a whole (a slow drip included)
    max_response_bytes: int = Field(16 << 20, ge=1)  # per HTTP answer (list page, model info)

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

    kind: Literal["dir"]
    path: Path
    interval_s: float = Field(60.0, gt=0)


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

    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=0, le=65535)  # unset: 8790, or a free port if taken
    webhook_secret: WebhookSecret | None = None  # env only: UPTAKE_WATCHER__WEBHOOK_SECRET
    store_url: str | None = None  # SQLAlchemy URL; unset: sqlite under the state dir
    backoff_initial_s: float = Field(5.0, gt=0)  # first retry after a failed poll
    backoff_max_s: float = Field(900.0, gt=0)  # cap of the doubling backoff
    alert_after: int = Field(5, ge=1)  # consecutive failed polls of one source
    outbox_retry_s: float = Field(30.0, gt=0)  # how often pending releases are re-published
    status_limit: int = Field(20, ge=1)

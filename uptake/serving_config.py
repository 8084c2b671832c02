"""Settings of ``uptake serve``: where it listens, how it batches, how it follows the champion.

They live in ``uptake/`` because the settings object, ``uptake up`` and ``uptake status`` read
them too (``uptake/`` imports no service package). The API key itself never appears here:
``api_key_env`` names the environment variable that holds it, as the alert channels do.
The vLLM engine's own knobs (``serving.vllm``) are defined here for the same reason.
"""

from __future__ import annotations

import os
import sys
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from uptake.config_model import ConfigModel
from uptake.errors import ConfigError

EngineName = Literal["transformers", "vllm"]

VLLM_MODULE = "vllm.entrypoints.openai.api_server"
# arguments the vLLM engine sets itself: which model answers and how safely it loads
VLLM_MANAGED_ARGS = (
    "--model",
    "--served-model-name",
    "--host",
    "--port",
    "--uds",
    "--load-format",
    "--trust-remote-code",
    "--api-key",
)


class VllmConfig(ConfigModel):
    """``command`` empty: this interpreter's ``-m vllm.entrypoints.openai.api_server``.

    Blue/green runs two servers of one track at once while a swap is under way: on one GPU,
    give each at most half of it (``extra_args: ["--gpu-memory-utilization", "0.45"]``).
    """

    command: list[str] = Field(default_factory=list)
    extra_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    start_timeout_s: float = Field(900.0, gt=0)  # big checkpoints load for minutes
    health_interval_s: float = Field(0.5, gt=0)
    warm_timeout_s: float = Field(300.0, gt=0)  # the first request compiles CUDA graphs
    request_timeout_s: float = Field(600.0, gt=0)
    drain_timeout_s: float = Field(120.0, ge=0)
    stop_grace_s: float = Field(30.0, ge=0)
    max_connections: int = Field(512, ge=1)
    guard_children: bool = True  # a watchdog stops the servers if `uptake serve` is killed

    @field_validator("command")
    @classmethod
    def _command_not_blank(cls, value: list[str]) -> list[str]:
        if value and not value[0].strip():
            raise ValueError("command[0] is empty: name the program to run")
        return value

    @field_validator("extra_args")
    @classmethod
    def _no_managed_args(cls, value: list[str]) -> list[str]:
        for arg in value:
            name = arg.split("=", 1)[0]
            if name in VLLM_MANAGED_ARGS:
                raise ValueError(
                    f"{name} is set by uptake (model, address, safetensors-only loading and "
                    "the trust_remote_code allow-list rule); remove it from extra_args"
                )
        return value

    def argv(self) -> list[str]:
        """The program to run, before the per-version arguments."""
        return list(self.command) or [sys.executable, "-m", VLLM_MODULE]


class ServingSettings(ConfigModel):
    """``uptake serve``. See docs/serving.md and docs/configuration.md."""

    DEFAULT_PORT: ClassVar[int] = 8000

    host: str = "127.0.0.1"
    # None: 8000, or any free port when 8000 is taken (two local stacks); a set port must be
    # free (0: any free port)
    port: int | None = Field(None, ge=0, le=65535)
    engine: EngineName = "transformers"
    device: str = "auto"  # transformers engine: auto, cpu, cuda, cuda:N
    # registered models to serve; empty: every track's (or mlflow.registered_model without tracks)
    models: list[str] = Field(default_factory=list)
    # batching (transformers engine): wait this long after the first request for more
    batch_window_ms: float = Field(5.0, ge=0, le=1000)
    max_batch: int = Field(16, ge=1, le=256)
    torch_threads: int | None = Field(None, ge=1)  # None: 1 for tiny models on CPU, else torch's
    max_request_bytes: int = Field(1 << 20, ge=1024)  # a larger body is refused (400)
    max_tokens_limit: int = Field(4096, ge=1)  # the most a request may ask for
    default_max_tokens: int = Field(256, ge=1)  # when a request does not say
    # follow the champion: events are the fast path, this reconcile with MLflow the safety net
    reconcile_interval_s: float = Field(30.0, gt=0)
    retry_failed_s: float = Field(300.0, ge=0)  # a version that failed to load is retried after
    api_key_env: str | None = None  # name of the env var holding the key; unset: no key
    consumer_group_prefix: str = "uptake-serving"  # + host, port and a uuid: one per replica
    public_url: str | None = None  # what `uptake up` prints; default: the bound address
    vllm: VllmConfig = VllmConfig()  # --engine vllm: docs/serving.md "vLLM"

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not value.replace("_", "a").isalnum():
            raise ValueError(f"{value!r} is not an environment variable name")
        return value or None

    def api_key(self) -> str | None:
        """The key requests must present, from the environment; None when none is configured.
        A configured variable that is unset or empty is an error, not an open server."""
        if self.api_key_env is None:
            return None
        value = os.environ.get(self.api_key_env, "")
        if not value:
            raise ConfigError(f"serving.api_key_env names {self.api_key_env}, which is not set")
        return value

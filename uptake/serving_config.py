"""Settings of ``uptake serve``: where it listens, how it batches, how it follows the champion.

They live in ``uptake/`` because the settings object, ``uptake up`` and ``uptake status`` read
them too (``uptake/`` imports no service package). The API key itself never appears here:
``api_key_env`` names the environment variable that holds it, as the alert channels do.
The vLLM engine's own knobs (``serving.vllm``) are defined here for the same reason.
"""

from __future__ import annotations

import ipaddress
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
    "--enable-auto-tool-choice",
    "--tool-call-parser",
)


class VllmConfig(ConfigModel):
    """How the vLLM engine starts, proxies and stops one server per version.

    Blue/green runs two servers of one track at once while a swap is under way: on one GPU,
    give each at most half of it (``extra_args: ["--gpu-memory-utilization", "0.45"]``).
    """

    command: list[str] = Field(
        default_factory=list,
        description="Program that starts a server, before uptake's arguments; []: this Python's "
        "`-m vllm.entrypoints.openai.api_server`.",
    )
    extra_args: list[str] = Field(
        default_factory=list,
        description="More vLLM flags (`--gpu-memory-utilization 0.45`); uptake's own are refused.",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment of each server (`CUDA_VISIBLE_DEVICES`, `VLLM_*`).",
    )
    start_timeout_s: float = Field(
        900.0, gt=0, description="Seconds from start to healthy (big checkpoints load for minutes)."
    )
    health_interval_s: float = Field(
        0.5, gt=0, description="Seconds between health polls while a server starts."
    )
    warm_timeout_s: float = Field(
        300.0, gt=0, description="Seconds for the warm-up request (it compiles CUDA graphs)."
    )
    request_timeout_s: float = Field(600.0, gt=0, description="Seconds per proxied request.")
    drain_timeout_s: float = Field(
        120.0, ge=0, description="Seconds a retired version may finish its requests in."
    )
    stop_grace_s: float = Field(30.0, ge=0, description="Seconds from SIGTERM to SIGKILL.")
    max_connections: int = Field(512, ge=1, description="Proxy connections to each server.")
    tool_call_parser: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="vLLM's `--tool-call-parser` (`hermes`, `llama3_json`, `mistral`, …); null: "
        "the parser for the call format the model's chat template shows, none when it shows none.",
    )
    guard_children: bool = Field(
        True, description="A watchdog stops the servers if `uptake serve` is killed (even -9)."
    )

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
            if name in ("--enable-auto-tool-choice", "--tool-call-parser"):
                raise ValueError(
                    f"{name} is set by uptake from the model's chat template; choose a parser "
                    "with serving.vllm.tool_call_parser instead"
                )
            if name in VLLM_MANAGED_ARGS:
                raise ValueError(
                    f"{name} is set by uptake (model, address, safetensors-only loading and "
                    "the trust_remote_code allow-list rule); remove it from extra_args"
                )
        return value

    def argv(self) -> list[str]:
        """The program to run, before the per-version arguments."""
        return list(self.command) or [sys.executable, "-m", VLLM_MODULE]


def is_loopback(host: str) -> bool:
    """``host`` is a loopback address or name (a wildcard or any other address is not)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ServingSettings(ConfigModel):
    """``uptake serve``. See docs/serving.md and docs/configuration.md."""

    DEFAULT_PORT: ClassVar[int] = 8000

    host: str = Field("127.0.0.1", description="Address the API binds.")
    port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="API port, must be free; null: 8000, or a free port if that is taken; "
        "0: any free port.",
    )
    engine: EngineName = Field(
        "transformers", description="`transformers` (in process) or `vllm` (a server per version)."
    )
    device: str = Field(
        "auto", description="Transformers engine: `auto`, `cpu`, `cuda` or `cuda:N`."
    )
    models: list[str] = Field(
        default_factory=list,
        description="Registered models to serve; []: every track's (no tracks: "
        "`mlflow.registered_model`).",
    )
    batch_window_ms: float = Field(
        5.0,
        ge=0,
        le=1000,
        description="Transformers engine: ms to wait after a request for more to batch with it.",
    )
    max_batch: int = Field(16, ge=1, le=256, description="Transformers engine: requests per batch.")
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="Torch CPU threads; null: 1 for models under 20M parameters on CPU, else "
        "torch's.",
    )
    max_request_bytes: int = Field(
        1 << 20, ge=1024, description="Largest request body, bytes; larger ones get 413."
    )
    max_queue: int = Field(
        256,
        ge=1,
        description="Requests one version holds waiting for a batch (vLLM engine: in flight); "
        "one more gets 429 with Retry-After.",
    )
    max_connections: int = Field(
        512,
        ge=1,
        description="Open client connections; one more is answered 503 and closed at once.",
    )
    keep_alive_s: float = Field(
        5.0, gt=0, description="Seconds an idle keep-alive connection stays open."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Seconds a client has to send a request's headers (from connecting, or from "
        "its first byte after an answer); then the connection is closed.",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Seconds a client has to send a request's body once its headers are in; "
        "then 408 and the connection is closed.",
    )
    allow_unauthenticated: bool = Field(
        False,
        description="Allow binding a non-loopback `host` without `api_key_env`; false: such a "
        "start is refused.",
    )
    max_tokens_limit: int = Field(
        4096, ge=1, description="The most `max_tokens` a request may ask for (400 above)."
    )
    default_max_tokens: int = Field(
        256, ge=1, description="`max_tokens` of a request that does not say."
    )
    reconcile_interval_s: float = Field(
        30.0,
        gt=0,
        description="Seconds between re-reads of every champion alias (catches missed events).",
    )
    retry_failed_s: float = Field(
        300.0,
        ge=0,
        description="Seconds before a version that failed to load is tried again; doubled after "
        "each further failure, up to `retry_failed_max_s`.",
    )
    retry_failed_max_s: float = Field(
        3600.0, ge=0, description="Longest wait before a failed version is tried again, seconds."
    )
    download_timeout_s: float = Field(
        1800.0,
        gt=0,
        description="Seconds a version's download may take; then it counts as a failed load.",
    )
    load_timeout_s: float = Field(
        1800.0,
        gt=0,
        description="Seconds a version's load and warm-up may take; then it counts as a failed "
        "load.",
    )
    api_key_env: str | None = Field(
        None, description="Name of the env var holding the API key; null: no key needed."
    )
    consumer_group_prefix: str = Field(
        "uptake-serving",
        description="Consumer group prefix; host, port and a uuid follow (one per replica).",
    )
    public_url: str | None = Field(
        None, description="The URL `uptake up` prints; null: the bound address."
    )
    keep_versions: int = Field(
        2,
        ge=0,
        description="Downloaded versions kept per model under `<state>/serving` besides the "
        "champion (the newest; a rollback loads them from disk); applied after each swap and "
        "by `uptake gc`.",
    )
    vllm: VllmConfig = Field(VllmConfig(), description="The vLLM engine (docs/serving.md).")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not value.replace("_", "a").isalnum():
            raise ValueError(f"{value!r} is not an environment variable name")
        return value or None

    @property
    def binds_loopback(self) -> bool:
        """The API is reachable from this machine only."""
        return is_loopback(self.host)

    def api_key(self) -> str | None:
        """The key requests must present, from the environment; None when none is configured.
        A configured variable that is unset or empty is an error, not an open server."""
        if self.api_key_env is None:
            return None
        value = os.environ.get(self.api_key_env, "")
        if not value:
            raise ConfigError(f"serving.api_key_env names {self.api_key_env}, which is not set")
        return value

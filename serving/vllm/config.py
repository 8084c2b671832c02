"""What the vLLM engine needs to know: how to start a server, and how long to wait for it.

The engine owns the arguments that decide *which* model answers and *how safely* it loads
(``--model``, ``--served-model-name``, ``--host``, ``--port``, ``--load-format safetensors``,
``--trust-remote-code`` from the allow-list rule). Passing one of those in ``extra_args``
would let a config line bypass that rule or point the proxy at the wrong server, so they are
refused here, at load time of the config, with one line.
"""

from __future__ import annotations

import sys

from pydantic import Field, field_validator

from uptake.config_model import ConfigModel

VLLM_MODULE = "vllm.entrypoints.openai.api_server"
MANAGED_ARGS = (
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
            if name in MANAGED_ARGS:
                raise ValueError(
                    f"{name} is set by uptake (model, address, safetensors-only loading and "
                    "the trust_remote_code allow-list rule); remove it from extra_args"
                )
        return value

    def argv(self) -> list[str]:
        """The program to run, before the per-version arguments."""
        return list(self.command) or [sys.executable, "-m", VLLM_MODULE]

"""One supervised vLLM server: started in its own process group, ready, then stopped whole.

vLLM's API process spawns engine-core and worker processes that hold the GPU; stopping only
the parent pid would leave them (and the GPU memory) behind. The server therefore runs in a
session of its own and is stopped by signalling the group: SIGTERM, a grace period, SIGKILL.

Ready means more than ``/health`` = 200: ``/v1/models`` must list the name this version was
started with. Free ports are picked racily, so a port could in principle reach some other
server; answering with our served name proves it is ours.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx

from serving.vllm.config import VllmConfig
from uptake.errors import DependencyError
from uptake.stack.process import ManagedProcess, free_port, group_members, terminate_group


class VllmStartError(DependencyError):
    """The server exited, stayed unhealthy past the start timeout, or failed its warm-up."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80]


class VllmServer:
    """The child process behind one loaded version, and its loopback address."""

    def __init__(
        self,
        config: VllmConfig,
        served_name: str,
        model_dir: Path,
        log_dir: Path,
        args: list[str],
    ) -> None:
        self.config = config
        self.served_name = served_name
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        stamp = time.strftime("%Y%m%dT%H%M%S")
        self.log_path = log_dir / f"{_slug(served_name)}-{stamp}-{self.port}.log"
        argv = [
            *config.argv(),
            "--model",
            str(model_dir),
            "--served-model-name",
            served_name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *args,
            *config.extra_args,
        ]
        self.process = ManagedProcess(
            f"vllm {served_name}", argv, self.log_path, env=dict(config.env) or None
        )
        self.pgid: int | None = None

    @property
    def running(self) -> bool:
        return self.process.running

    def start(self) -> None:
        self.process.start()
        self.pgid = self.process.pid  # start_new_session: the leader's pid is the group id

    def exit_reason(self) -> str:
        return self.process.exit_reason()

    async def wait_ready(self, client: httpx.AsyncClient) -> None:
        """Until ``/health`` is 200 and ``/v1/models`` lists our name; raise on exit or timeout."""
        deadline = time.monotonic() + self.config.start_timeout_s
        while True:
            if not self.running:
                raise VllmStartError(
                    f"vLLM server for {self.served_name} exited during start-up "
                    f"({self.exit_reason()}); log: {self.log_path}"
                )
            if await self._ready(client):
                return
            if time.monotonic() >= deadline:
                raise VllmStartError(
                    f"vLLM server for {self.served_name} not healthy after "
                    f"{self.config.start_timeout_s:g}s ({self.exit_reason()}); "
                    f"log: {self.log_path}"
                )
            await asyncio.sleep(self.config.health_interval_s)

    async def _ready(self, client: httpx.AsyncClient) -> bool:
        probe = min(5.0, max(self.config.health_interval_s, 1.0))
        try:
            health = await client.get(f"{self.base_url}/health", timeout=probe)
            if health.status_code != 200:
                return False
            models = await client.get(f"{self.base_url}/v1/models", timeout=probe)
        except httpx.HTTPError:
            return False
        if models.status_code != 200:
            return False
        try:
            ids = [m.get("id") for m in models.json().get("data", []) if isinstance(m, dict)]
        except (ValueError, AttributeError):
            return False
        return self.served_name in ids

    def stop_blocking(self) -> None:
        """SIGTERM the group, wait ``stop_grace_s``, SIGKILL what is left, reap the leader."""
        self.process.stop(self.config.stop_grace_s)
        if self.pgid is not None and group_members(self.pgid):  # leader gone, workers left
            terminate_group(self.pgid, 0)

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_blocking)

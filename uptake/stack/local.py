"""``uptake up``: the embedded broker, MLflow and the services, started and stopped together.

What was started is written to ``<state dir>/stack.json`` so ``uptake status`` (and the
services) can find the embedded broker and MLflow without extra configuration.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from uptake.bus.topics import ensure_topics
from uptake.errors import DependencyError
from uptake.services import SERVICES, ServiceSpec, resolve
from uptake.settings import Settings
from uptake.stack.broker import embedded_broker, resolve_broker_bin
from uptake.stack.mlflow_server import mlflow_server
from uptake.stack.process import ManagedProcess, port_open

BROKER_START_TIMEOUT_S = 30.0
MLFLOW_START_TIMEOUT_S = 180.0
SERVICE_START_TIMEOUT_S = 60.0


class StackInfo(BaseModel):
    """What a running ``uptake up`` started, for ``uptake status`` and the services."""

    pid: int
    kafka_bootstrap: str
    mlflow_tracking_uri: str
    embedded_broker: bool
    embedded_mlflow: bool
    components: dict[str, int | None]  # name -> pid (None when external)


def stack_file(settings: Settings) -> Path:
    return settings.state_dir / "stack.json"


def read_stack_info(settings: Settings) -> StackInfo | None:
    path = stack_file(settings)
    try:
        info = StackInfo.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return None  # stale file of a stack that is gone
    except PermissionError:
        pass
    return info


def resolved_endpoints(settings: Settings) -> tuple[str, str]:
    """Bootstrap and tracking URI: explicit settings, else a running local stack, else defaults."""
    info = read_stack_info(settings)
    bootstrap = settings.kafka_bootstrap or (
        info.kafka_bootstrap if info else f"127.0.0.1:{settings.kafka.embedded_port}"
    )
    tracking = settings.mlflow_tracking_uri or (
        info.mlflow_tracking_uri if info else settings.tracking_uri
    )
    return bootstrap, tracking


def _service_probe(ref: str, settings: Settings, proc: ManagedProcess) -> Callable[[], bool]:
    probe = resolve(ref)

    def healthy() -> bool:
        address = probe(settings, proc.pid)
        if address:
            proc.address = address
        return bool(address)

    return healthy


class LocalStack:
    """Starts each piece, waits until it is healthy, and stops all of them in reverse order."""

    def __init__(self, settings: Settings, config: Path | None = None) -> None:
        self.settings = settings
        self.config = config.resolve() if config is not None else None  # passed on to services
        self.processes: list[ManagedProcess] = []
        self.bootstrap = settings.kafka_bootstrap or ""
        self.tracking_uri = settings.mlflow_tracking_uri or ""

    @property
    def logs(self) -> Path:
        return self.settings.state_dir / "logs"

    def start(self, include: tuple[str, ...] = ("broker", "mlflow", "services")) -> None:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            if "broker" in include and self.settings.embedded_broker:
                self._start_broker()
            if "mlflow" in include and self.settings.mlflow_tracking_uri is None:
                self._start_mlflow()
            if "services" in include:
                ensure_topics(self.settings.model_copy(update={"kafka_bootstrap": self.bootstrap}))
                for service in SERVICES:
                    self._start_service(service)
        except BaseException:
            self.stop()
            raise
        self._write_info()

    def _claim_port(self, what: str, port: int) -> None:
        if port_open("127.0.0.1", port):
            raise DependencyError(
                f"cannot start {what}: 127.0.0.1:{port} is already in use "
                "(another `uptake up`? set a different port in the config)"
            )

    def _start_broker(self) -> None:
        port = self.settings.kafka.embedded_port
        self._claim_port("the embedded broker", port)
        binary = resolve_broker_bin(self.settings.broker_bin)
        proc = embedded_broker(binary, port, self.logs / "broker.log").start()
        self.processes.append(proc)
        proc.wait_healthy(BROKER_START_TIMEOUT_S)
        self.bootstrap = proc.address

    def _start_mlflow(self) -> None:
        m = self.settings.mlflow
        self._claim_port("MLflow", m.port)
        proc = mlflow_server(
            self.settings.state_dir,
            m.port,
            host=m.host,
            backend_store_uri=m.backend_store_uri,
            log_path=self.logs / "mlflow.log",
        ).start()
        self.processes.append(proc)
        proc.wait_healthy(MLFLOW_START_TIMEOUT_S)
        self.tracking_uri = proc.address

    def _start_service(self, service: ServiceSpec) -> None:
        env = {
            "UPTAKE_KAFKA_BOOTSTRAP": self.bootstrap,
            "UPTAKE_MLFLOW_TRACKING_URI": self.tracking_uri,
            "UPTAKE_HOME": str(self.settings.state_dir),
        }
        if self.config is not None:
            env["UPTAKE_CONFIG"] = str(self.config)
        name = service.name
        proc = ManagedProcess(
            name,
            [sys.executable, "-m", "uptake.cli", *service.command],
            self.logs / f"{name}.log",
            env=env,
        )
        if service.probe is not None:
            proc.healthy = _service_probe(service.probe, self.settings, proc)
        proc.start()
        self.processes.append(proc)
        proc.wait_healthy(SERVICE_START_TIMEOUT_S)

    def _write_info(self) -> None:
        info = StackInfo(
            pid=os.getpid(),
            kafka_bootstrap=self.bootstrap,
            mlflow_tracking_uri=self.tracking_uri,
            embedded_broker=self.settings.embedded_broker,
            embedded_mlflow=self.settings.mlflow_tracking_uri is None,
            components={p.name: p.pid for p in self.processes},
        )
        stack_file(self.settings).write_text(json.dumps(info.model_dump(), indent=2))

    def dead(self) -> list[ManagedProcess]:
        return [p for p in self.processes if not p.running]

    def wait(self, poll_s: float = 0.5) -> ManagedProcess:
        """Block until a component exits on its own (Ctrl-C interrupts this); return it."""
        while True:
            if dead := self.dead():
                return dead[0]
            time.sleep(poll_s)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        path = stack_file(self.settings)
        if path.exists():
            try:
                if StackInfo.model_validate_json(path.read_text()).pid == os.getpid():
                    path.unlink()
            except (OSError, ValueError):
                pass

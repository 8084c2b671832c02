"""``uptake up``: the embedded broker, MLflow and the services, started and stopped together.

What was started is written to ``<state dir>/stack.json`` so ``uptake status`` (and the
services) can find the embedded broker and MLflow without extra configuration; it also
holds each component's pid, start time, restart count and last exit, so a later ``uptake
up`` can stop what a killed one left behind.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from uptake.bus.producer import EventProducer
from uptake.bus.topics import ensure_topics
from uptake.errors import DependencyError, one_line
from uptake.events import AlertRaised
from uptake.services import SERVICES, ServiceSpec, resolve
from uptake.settings import Settings
from uptake.stack.broker import embedded_broker, resolve_broker_bin
from uptake.stack.mlflow_server import mlflow_server
from uptake.stack.process import (
    ManagedProcess,
    group_members,
    port_open,
    start_ticks,
    terminate_groups,
)
from uptake.stack.restarts import ComponentRecord, RestartTracker
from uptake.stack.watchdog import Watchdog

log = logging.getLogger(__name__)

BROKER_START_TIMEOUT_S = 30.0
MLFLOW_START_TIMEOUT_S = 180.0
SERVICE_START_TIMEOUT_S = 60.0


class StackInfo(BaseModel):
    """What a running ``uptake up`` started, for ``uptake status`` and the services."""

    pid: int
    started_ticks: int | None = None  # /proc start time of `uptake up`: tells a reused pid
    kafka_bootstrap: str
    mlflow_tracking_uri: str
    embedded_broker: bool
    embedded_mlflow: bool
    components: dict[str, int | None]  # name -> pid (None when external or given up)
    processes: dict[str, ComponentRecord] = {}  # name -> pid, start time, restarts, last exit


def stack_file(settings: Settings) -> Path:
    return settings.state_dir / "stack.json"


def _same_process(pid: int, ticks: int | None) -> bool:
    """``pid`` is alive and, when its start time was recorded, still that process."""
    if Path("/proc/self/stat").exists():
        now = start_ticks(pid)
        return now is not None and (ticks is None or now == ticks)
    try:  # no /proc: the pid is all there is to go on
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_stack_info(settings: Settings) -> StackInfo | None:
    path = stack_file(settings)
    try:
        info = StackInfo.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None
    if not _same_process(info.pid, info.started_ticks):
        return None  # stale file of a stack that is gone
    return info


def clean_stale_stack(settings: Settings, grace_s: float = 10.0) -> list[str]:
    """Stop what a dead ``uptake up`` recorded in ``stack.json`` and left running.

    A recorded process group is stopped only if its leader is gone (then whatever is left in
    the group is the old stack's) or is still the same process (same /proc start time); a
    pid that now belongs to something else is left alone. Returns one line per group stopped;
    raises DependencyError naming the pids when a live ``uptake up`` owns the file or when
    what is left cannot be verified or stopped.
    """
    path = stack_file(settings)
    try:
        info = StackInfo.model_validate_json(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError):
        path.unlink(missing_ok=True)  # unreadable: nothing we could verify
        return []
    if _same_process(info.pid, info.started_ticks):
        raise DependencyError(
            f"another `uptake up` (pid {info.pid}) is running on {settings.state_dir}; "
            "stop it first or use another UPTAKE_HOME"
        )
    groups: dict[str, int] = {}
    unverified: list[str] = []
    for name, record in info.processes.items():
        if record.pid is None:
            continue
        now = start_ticks(record.pid)
        if now is not None and record.started_ticks is not None and now != record.started_ticks:
            continue  # the pid was reused by an unrelated process
        if now is not None or group_members(record.pid):
            groups[name] = record.pid
    if not info.processes:  # written by an older uptake: pids without start times
        unverified = [
            f"{name} (pid {pid})"
            for name, pid in info.components.items()
            if pid is not None and start_ticks(pid) is not None
        ]
    if unverified:
        raise DependencyError(
            f"{path} is left from an `uptake up` (pid {info.pid}) that is gone, and these "
            f"pids are alive: {', '.join(unverified)}; stop them if they are uptake's, then "
            f"delete {path}"
        )
    terminate_groups(list(groups.values()), grace_s)
    left = {name: pgid for name, pgid in groups.items() if group_members(pgid)}
    if left:
        raise DependencyError(
            "could not stop what a previous `uptake up` left running: "
            + ", ".join(f"{name} (process group {pgid})" for name, pgid in left.items())
            + "; stop them (kill -9 -PGID), then start again"
        )
    path.unlink(missing_ok=True)
    return [
        f"stopped {name} (process group {pgid}) left by `uptake up` pid {info.pid}"
        for name, pgid in groups.items()
    ]


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


def resolved_settings(settings: Settings) -> Settings:
    """``settings`` with the broker and MLflow filled in as ``resolved_endpoints`` finds them:
    what a service process runs with."""
    bootstrap, tracking = resolved_endpoints(settings)
    return settings.model_copy(
        update={"kafka_bootstrap": bootstrap, "mlflow_tracking_uri": tracking}
    )


def _service_probe(ref: str, settings: Settings, proc: ManagedProcess) -> Callable[[], bool]:
    probe = resolve(ref)

    def healthy() -> bool:
        address = probe(settings, proc.pid)
        if address:
            proc.address = address
        return bool(address)

    return healthy


class LocalStack:
    """Starts each piece, waits until it is healthy, keeps them up, and stops all of them in
    reverse order.

    A watchdog process stops every group if ``uptake up`` dies without stopping them (kill
    -9); a component that exits on its own is restarted with backoff and given up after a
    crash loop (``settings.stack``), each time said on the console, in ``stack.json`` and in a
    ``service`` alert (``alert.raised`` on the releases topic, delivered by the alerter).
    """

    def __init__(self, settings: Settings, config: Path | None = None) -> None:
        self.settings = settings
        self.config = config.resolve() if config is not None else None  # passed on to services
        self.processes: list[ManagedProcess] = []
        self.trackers: dict[str, RestartTracker] = {}
        self.bootstrap = settings.kafka_bootstrap or ""
        self.tracking_uri = settings.mlflow_tracking_uri or ""
        self.watchdog: Watchdog | None = None
        self._producer: EventProducer | None = None
        self._alerts: deque[AlertRaised] = deque(maxlen=100)
        self._alerts_retry_at = 0.0
        self.left_out: dict[str, str] = {}  # service -> why it was not started (its ``enabled``)

    @property
    def logs(self) -> Path:
        return self.settings.state_dir / "logs"

    def start(self, include: tuple[str, ...] = ("broker", "mlflow", "services")) -> None:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        for line in clean_stale_stack(self.settings):
            log.warning("%s", line)
        self.watchdog = Watchdog()
        try:
            if "broker" in include and self.settings.embedded_broker:
                self._start_broker()
            if "mlflow" in include and self.settings.mlflow_tracking_uri is None:
                self._start_mlflow()
            if "services" in include:
                ensure_topics(self._bus_settings())
                for service in SERVICES:
                    if (reason := self._left_out(service)) is not None:
                        self.left_out[service.name] = reason
                        log.warning("not starting %s: %s", service.name, reason)
                        continue
                    self._start_service(service)
        except BaseException:
            self.stop()
            raise
        self._write_info()

    def _left_out(self, service: ServiceSpec) -> str | None:
        """Why ``service`` is not started here (the worker without tracks), or None."""
        return None if service.enabled is None else resolve(service.enabled)(self.settings)

    def _bus_settings(self) -> Settings:
        return self.settings.model_copy(update={"kafka_bootstrap": self.bootstrap})

    def _claim_port(self, what: str, port: int) -> None:
        if port_open("127.0.0.1", port):
            raise DependencyError(
                f"cannot start {what}: 127.0.0.1:{port} is already in use "
                "(another `uptake up`? set a different port in the config)"
            )

    def _launch(self, proc: ManagedProcess) -> ManagedProcess:
        """Start ``proc`` under the watchdog and record it in stack.json at once (a kill -9
        during start-up must find it too)."""
        proc.start()
        if self.watchdog is not None and proc.pid is not None:
            self.watchdog.guard(proc.pid)
        if proc not in self.processes:
            self.processes.append(proc)
            self.trackers[proc.name] = RestartTracker(self.settings.stack)
        self._write_info()
        return proc

    def _start_broker(self) -> None:
        port = self.settings.kafka.embedded_port
        self._claim_port("the embedded broker", port)
        binary = resolve_broker_bin(self.settings.broker_bin)
        proc = self._launch(embedded_broker(binary, port, self.logs / "broker.log"))
        proc.wait_healthy(BROKER_START_TIMEOUT_S)
        self.bootstrap = proc.address

    def _start_mlflow(self) -> None:
        m = self.settings.mlflow
        self._claim_port("MLflow", m.port)
        proc = self._launch(
            mlflow_server(
                self.settings.state_dir,
                m.port,
                host=m.host,
                backend_store_uri=m.backend_store_uri,
                log_path=self.logs / "mlflow.log",
            )
        )
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
        self._launch(proc)
        proc.wait_healthy(SERVICE_START_TIMEOUT_S)

    def _write_info(self) -> None:
        """Rewrite stack.json in one step (``uptake status`` may be reading it)."""
        records = {
            p.name: ComponentRecord(
                pid=p.pid if self.trackers[p.name].state != "failed" else None,
                started_ticks=p.started_ticks,
                state=self.trackers[p.name].state,
                restarts=self.trackers[p.name].restarts,
                last_exit=self.trackers[p.name].last_exit,
            )
            for p in self.processes
        }
        info = StackInfo(
            pid=os.getpid(),
            started_ticks=start_ticks(os.getpid()),
            kafka_bootstrap=self.bootstrap,
            mlflow_tracking_uri=self.tracking_uri,
            embedded_broker=self.settings.embedded_broker,
            embedded_mlflow=self.settings.mlflow_tracking_uri is None,
            components={name: r.pid for name, r in records.items()},
            processes=records,
        )
        path = stack_file(self.settings)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(info.model_dump(), indent=2))
        os.replace(tmp, path)

    def supervise(self, say: Callable[[str], object] = print, poll_s: float = 0.5) -> None:
        """Keep the stack up until interrupted (Ctrl-C / SIGTERM raise out of here).

        Returns only when every component has been given up."""
        while True:
            for proc in self.processes:
                tracker = self.trackers[proc.name]
                if tracker.state == "running" and not proc.running:
                    self._exited(proc, tracker, say)
                elif tracker.due():
                    self._restart(proc, tracker, say)
                elif tracker.alert_open and tracker.stable():
                    tracker.alert_open = False
                    self._alert(
                        proc.name,
                        "restarted",
                        "info",
                        f"{proc.name} is up again",
                        {"restarts": str(tracker.restarts)},
                        resolved=True,
                    )
            self._flush_alerts()
            if all(t.state == "failed" for t in self.trackers.values()):
                return
            time.sleep(poll_s)

    def _exited(
        self, proc: ManagedProcess, tracker: RestartTracker, say: Callable[[str], object]
    ) -> None:
        reason = proc.exit_reason()
        pgid = proc.pid
        proc.stop(grace_s=5)  # what is left of its group (mlflow's workers) holds its port
        if self.watchdog is not None and pgid is not None:
            self.watchdog.release(pgid)
        delay = tracker.exited(reason)
        cfg = self.settings.stack
        details = {"reason": reason, "restarts": str(tracker.restarts), "log": str(proc.log_path)}
        if delay is None:
            line = (
                f"{proc.name} exited {len(tracker.exits)} times within "
                f"{cfg.crash_loop_window_s:.0f}s ({reason}); giving up on it, the rest stays "
                f"up; see {proc.log_path}"
            )
            say(line)
            self._alert(proc.name, "crash_loop", "error", f"uptake up: {line}", details)
        else:
            line = (
                f"{proc.name} exited unexpectedly ({reason}); restarting in {delay:g}s; "
                f"see {proc.log_path}"
            )
            say(line)
            tracker.alert_open = True
            self._alert(proc.name, "restarted", "warning", f"uptake up: {line}", details)
        self._write_info()

    def _restart(
        self, proc: ManagedProcess, tracker: RestartTracker, say: Callable[[str], object]
    ) -> None:
        try:
            self._launch(proc)
        except DependencyError as exc:  # could not even exec: counts as one more exit
            tracker.restarted()
            tracker.exited(str(exc))
            self._write_info()
            return
        tracker.restarted()
        self._write_info()
        say(f"{proc.name} restarted (pid {proc.pid}, restart {tracker.restarts})")
        if proc.name == "broker":  # memory storage: the topics went with the old process
            try:
                proc.wait_healthy(BROKER_START_TIMEOUT_S)
                ensure_topics(self._bus_settings())
            except Exception as exc:  # it died again: the next round sees it
                log.warning("broker restart: %s", exc)

    def _alert(
        self,
        component: str,
        condition: str,
        severity: str,
        summary: str,
        details: dict[str, str],
        *,
        resolved: bool = False,
    ) -> None:
        self._alerts.append(
            AlertRaised(
                component=f"stack:{component}",
                condition=condition,
                severity=severity,
                summary=one_line(summary),
                details=details,
                resolved=resolved,
                producer="uptake-up",
            )
        )

    def _flush_alerts(self) -> None:
        """Publish queued alerts; a broker that is down keeps them for a later round."""
        if not self._alerts or not self.bootstrap or time.monotonic() < self._alerts_retry_at:
            return
        try:
            if self._producer is None:
                self._producer = EventProducer(self._bus_settings(), "uptake-up")
            while self._alerts:
                self._producer.publish(self._alerts[0], timeout_s=5)
                self._alerts.popleft()
        except Exception as exc:
            log.warning("could not publish a service alert (will retry): %s", exc)
            self._alerts_retry_at = time.monotonic() + 10

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
            if self.watchdog is not None and proc.pid is not None:
                self.watchdog.release(proc.pid)
        if self._producer is not None:
            self._flush_alerts()
            self._producer.close()
            self._producer = None
        if self.watchdog is not None:
            self.watchdog.close()
            self.watchdog = None
        path = stack_file(self.settings)
        if path.exists():
            try:
                if StackInfo.model_validate_json(path.read_text()).pid == os.getpid():
                    path.unlink()
            except (OSError, ValueError):
                pass

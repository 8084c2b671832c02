"""``uptake status``: is the broker reachable, is MLflow, and how far has each topic got."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from uptake.retention import DiskUse, disk_use
from uptake.services import SERVICES, resolve
from uptake.settings import Settings
from uptake.stack.local import read_stack_info, resolved_endpoints
from uptake.stack.probes import mlflow_healthy
from uptake.stack.restarts import ComponentRecord


class TopicStatus(BaseModel):
    name: str
    exists: bool
    partitions: int = 0
    end_offsets: dict[int, int] = {}

    @property
    def messages(self) -> int:
        return sum(self.end_offsets.values())


class ComponentStatus(BaseModel):
    name: str
    address: str
    healthy: bool
    detail: str = ""


class StatusSection(BaseModel):
    """A service's own part of ``uptake status`` (recent releases, champion, ...)."""

    name: str
    title: str
    columns: list[str] = []
    rows: list[list[str]] = []
    data: dict[str, Any] = {}  # what ``--json`` shows
    error: str | None = None


class StatusReport(BaseModel):
    broker: ComponentStatus
    mlflow: ComponentStatus
    topics: list[TopicStatus]
    local_stack_pid: int | None = None
    # what `uptake up` runs: pid, state (running/restarting/failed), restarts, last exit
    local_stack: dict[str, ComponentRecord] = {}
    sections: list[StatusSection] = []
    disk: DiskUse | None = None  # the state dir's size and its disk's free space
    disk_error: str | None = None

    @property
    def healthy(self) -> bool:
        return self.broker.healthy and self.mlflow.healthy


def _topic_offsets(
    bootstrap: str, names: list[str], timeout_s: float
) -> tuple[bool, str, list[TopicStatus]]:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(timeout_s * 1000),
            client_id="uptake-status",
            enable_auto_commit=False,
        )
    except (KafkaError, OSError, ValueError) as exc:
        return False, f"unreachable: {exc}", [TopicStatus(name=n, exists=False) for n in names]
    try:
        existing = consumer.topics()
        out = []
        for name in names:
            if name not in existing:
                out.append(TopicStatus(name=name, exists=False))
                continue
            parts = sorted(consumer.partitions_for_topic(name) or [])
            ends = consumer.end_offsets([TopicPartition(name, p) for p in parts])
            out.append(
                TopicStatus(
                    name=name,
                    exists=True,
                    partitions=len(parts),
                    end_offsets={tp.partition: off for tp, off in ends.items()},
                )
            )
        return True, "", out
    except (KafkaError, OSError) as exc:
        return False, f"error: {exc}", [TopicStatus(name=n, exists=False) for n in names]
    finally:
        consumer.close()


def _sections(settings: Settings) -> list[StatusSection]:
    """Ask each service's provider; one that fails shows its error instead of hiding the others."""
    out = []
    for ref in (s.status for s in SERVICES if s.status is not None):
        try:
            out.append(resolve(ref)(settings))
        except Exception as exc:
            out.append(StatusSection(name=ref, title=ref, error=f"{type(exc).__name__}: {exc}"))
    return out


def collect_status(settings: Settings, timeout_s: float = 5.0) -> StatusReport:
    bootstrap, tracking = resolved_endpoints(settings)
    names = list(settings.kafka.topics.model_dump().values())
    ok, detail, topics = _topic_offsets(bootstrap, names, timeout_s)
    mlflow_ok = mlflow_healthy(tracking, timeout_s)
    info = read_stack_info(settings)
    disk: DiskUse | None = None
    disk_error: str | None = None
    try:
        disk = disk_use(settings.state_dir)
    except OSError as exc:
        disk_error = f"{type(exc).__name__}: {exc}"
    return StatusReport(
        broker=ComponentStatus(name="broker", address=bootstrap, healthy=ok, detail=detail),
        mlflow=ComponentStatus(
            name="mlflow",
            address=tracking,
            healthy=mlflow_ok,
            detail="" if mlflow_ok else "no answer on /health",
        ),
        topics=topics,
        local_stack_pid=info.pid if info else None,
        local_stack=info.processes if info else {},
        sections=_sections(settings),
        disk=disk,
        disk_error=disk_error,
    )

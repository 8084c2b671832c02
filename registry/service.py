"""``uptake promoter``: the consumer of ``candidate.registered``, the approval webhook, the
reconcile loop and (when channels are configured) the alerter, in one process.

Nothing here needs a model to exist: on an empty stack the promoter polls an empty topic,
its reconcile passes find no registered model, and it stays up (``uptake up`` relies on it).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
import uuid
from pathlib import Path

from kafka import KafkaConsumer

from registry.alerts.service import AlerterService
from registry.context import Context
from registry.db import make_engine
from registry.decision_flow import handle_candidate
from registry.locks import ModelLocks
from registry.managed import require_managed
from registry.mlflow_registry import Registry, bound_mlflow_requests
from registry.outbox import Outbox
from registry.reconcile import ApprovalWorker, reconcile_once
from registry.store import StateStore
from registry.webhook_receiver import DeliveryLog, ReceiverServer, ReceiverStats, make_app
from uptake.bus import EventConsumer, EventProducer, ThreadJob, ensure_topics
from uptake.errors import DependencyError
from uptake.events import CandidateRegistered, Event
from uptake.service_runtime import Supervisor, stop_consumer
from uptake.settings import Settings
from uptake.stack.local import resolved_settings

log = logging.getLogger(__name__)

PRODUCER = "uptake-promoter"


def webhook_secret(settings: Settings) -> str:
    """``UPTAKE_MLFLOW__WEBHOOK_SECRET``, else one generated once under the state dir (0600)."""
    if settings.mlflow.webhook_secret is not None:
        return settings.mlflow.webhook_secret.get_secret_value()
    path = settings.state_dir / "registry" / "webhook-secret"
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return Path(path).read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


def make_context(settings: Settings, producer: EventProducer | None) -> Context:
    bound_mlflow_requests(settings.registry)
    engine = make_engine(settings)
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    r = settings.registry
    return Context(
        settings=settings,
        registry=Registry(settings.tracking_uri),
        store=StateStore(engine),
        locks=ModelLocks(engine, holder, r.lease_s, r.lock_timeout_s),
        outbox=Outbox(engine, producer),
        producer=PRODUCER,
    )


def _caught_up(kafka: KafkaConsumer) -> bool:
    assigned = list(kafka.assignment())
    if not assigned:
        return False
    ends = kafka.end_offsets(assigned)
    return all(kafka.position(tp) >= ends[tp] for tp in assigned)


class PromoterService:
    def __init__(self, settings: Settings, *, alerts: bool = True) -> None:
        self.settings = resolved_settings(settings)
        self.producer = EventProducer(self.settings, producer_name=PRODUCER)
        self.ctx = make_context(self.settings, self.producer)
        r = self.settings.registry
        self.worker = ApprovalWorker(self.ctx, r.reconcile_interval_s)
        self.receiver: ReceiverServer | None = None
        self.receiver_stats = ReceiverStats()
        self.webhook_id: str | None = None
        self.webhook_url: str | None = None
        self.consumer: EventConsumer | None = None
        self.alerter = (
            AlerterService(self.settings) if alerts and self.settings.alerts.channels else None
        )
        self._thread: threading.Thread | None = None
        self.supervisor = Supervisor("promoter")

    # -- pieces ------------------------------------------------------------------------------

    def _handle(self, event: Event, _record: object) -> ThreadJob:
        """Decide on a worker thread: waiting for a lease and for MLflow can outlast
        ``max_poll_interval_ms``, so the consumer keeps polling (partitions paused) and
        commits after the decision. An unmanaged model is refused here, at once."""
        assert isinstance(event, CandidateRegistered)
        require_managed(self.settings, event.registered_model)
        return ThreadJob(
            lambda: handle_candidate(self.ctx, event),
            name=f"decide-{event.registered_model}-v{event.version}",
        )

    def _make_consumer(self) -> EventConsumer:
        return EventConsumer(
            self.settings,
            self.settings.registry.consumer_group,
            [self.settings.kafka.topics.runs],
            self._handle,
            accept=[CandidateRegistered],
            producer=self.producer,
            max_poll_records=1,  # one decision at a time, each on a thread (``_handle``)
        )

    def _start_receiver(self) -> None:
        cfg = self.settings.registry.webhook
        secret = webhook_secret(self.settings)
        app = make_app(
            secret,
            DeliveryLog(self.ctx.store.engine, cfg.max_age_s),
            self.worker.hint,
            self.receiver_stats,
        )
        try:
            self.receiver = ReceiverServer(app, cfg.host, cfg.port).start()
        except (OSError, DependencyError) as exc:
            log.error("webhook receiver did not start (%s); approvals rely on reconcile", exc)
            return
        receiver = self.receiver
        self.supervisor.watch("webhook receiver", lambda: receiver.alive)
        url = cfg.public_url or self.receiver.url
        log.info("webhook receiver on %s (MLflow posts to %s)", self.receiver.url, url)
        if not cfg.manage:
            return
        try:
            self.webhook_id = self.ctx.registry.ensure_webhook(cfg.name, url, secret)
            self.webhook_url = url
            log.info("MLflow webhook %r -> %s registered", cfg.name, url)
        except Exception as exc:  # e.g. a file store without webhooks: reconcile still works
            log.warning("could not register MLflow webhook %r: %s", cfg.name, exc)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> PromoterService:
        t = self.settings.kafka.topics
        ensure_topics(self.settings, [t.runs, t.decisions, t.dlq])
        if self.settings.registry.webhook.enabled:
            self._start_receiver()
        self.worker.start()
        self.consumer = self._make_consumer()
        self._thread = self.supervisor.start("consumer", self.consumer.run)
        if self.alerter is not None:
            self.alerter.start(self.supervisor)
        log.info("promoter started (consumer group %s)", self.settings.registry.consumer_group)
        return self

    def wait(self, stop: threading.Event) -> None:
        """Block until ``stop`` is set; raise ServiceFailed when a consumer (the promoter's
        or the alerter's) or the webhook receiver stops on its own."""
        self.supervisor.wait(stop)

    def stop(self) -> None:
        log.info("stopping the promoter")
        self.supervisor.stop()
        stop_consumer(self.consumer, self._thread)
        self.consumer = None
        self.worker.stop()
        if self.alerter is not None:
            self.alerter.stop()
        if self.receiver is not None:
            if self.webhook_id is not None:
                try:
                    reg = self.ctx.registry
                    if not reg.delete_webhook(self.webhook_id, only_if_url=self.webhook_url):
                        log.info("MLflow webhook now posts to another promoter; left in place")
                except Exception as exc:
                    log.warning("could not delete MLflow webhook: %s", exc)
            self.receiver.stop()
        self.producer.close()
        self.ctx.store.engine.dispose()
        log.info("promoter stopped")

    def run_once(self, timeout_s: float = 60.0) -> int:
        """Handle what is on the topic now, reconcile once, publish; return events handled."""
        t = self.settings.kafka.topics
        ensure_topics(self.settings, [t.runs, t.decisions, t.dlq])
        consumer = self._make_consumer()
        try:
            deadline = time.monotonic() + timeout_s
            stats = consumer.run(
                until=lambda: _caught_up(consumer.kafka), timeout_s=max(1.0, timeout_s)
            )
            reconcile_once(self.ctx)
            if time.monotonic() > deadline:
                log.warning("--once: stopped after %.0fs before catching up", timeout_s)
            return stats.processed
        finally:
            consumer.close()
            self.producer.close()
            self.ctx.store.engine.dispose()

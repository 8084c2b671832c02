"""The alerter: its own consumer group on releases, runs, decisions and the DLQ.

Being a separate group, it never slows the promoter or the workers; its handler only
queues rows in the state store (milliseconds), and the channel dispatchers deliver them.
Its consumer runs under a ``Supervisor`` (its own, or the promoter's when it runs inside
``uptake promoter``): if it dies, the process exits non-zero instead of going on without it.
"""

from __future__ import annotations

import logging
import threading

from kafka.consumer.fetcher import ConsumerRecord

from registry.alerts.dispatcher import ChannelDispatcher
from registry.alerts.grouping import GroupFlusher
from registry.alerts.router import enqueue, flush_groups
from registry.alerts.rules import ACCEPTED, alerts_for
from registry.db import make_engine
from uptake.bus import EventConsumer, EventProducer
from uptake.events import Event
from uptake.service_runtime import Supervisor, stop_consumer
from uptake.settings import Settings

log = logging.getLogger(__name__)


class AlerterService:
    def __init__(self, settings: Settings, producer: EventProducer | None = None) -> None:
        self.settings = settings
        self.cfg = settings.alerts
        self.engine = make_engine(settings)
        self.mlflow_url = self.cfg.public_mlflow_url or settings.mlflow_tracking_uri
        self.dispatchers = {
            name: ChannelDispatcher(self.engine, name, self.cfg) for name in self.cfg.channels
        }
        self.flusher = GroupFlusher(
            self.engine, self.cfg, lambda: flush_groups(self.engine, self.cfg), self._wake
        )
        self.queued = 0
        self._producer = producer
        self.consumer: EventConsumer | None = None
        self._thread: threading.Thread | None = None
        self.supervisor = Supervisor("alerter")

    def handle(self, event: Event, record: ConsumerRecord | None = None) -> None:
        for alert in alerts_for(event, self.cfg, self.mlflow_url):
            queued = enqueue(self.engine, alert, self.cfg)
            self.queued += queued
            if queued:
                for dispatcher in self.dispatchers.values():
                    dispatcher.wake()

    def _wake(self) -> None:
        for dispatcher in self.dispatchers.values():
            dispatcher.wake()

    def _consumer(self) -> EventConsumer:
        t = self.settings.kafka.topics
        # A bystander on topics other groups own: their consumers dead-letter what cannot be
        # decoded (and that DeadLetter reaches us on the DLQ); we only skip it.
        return EventConsumer(
            self.settings,
            self.cfg.consumer_group,
            [t.releases, t.runs, t.decisions, t.dlq],
            self.handle,
            accept=ACCEPTED,
            producer=self._producer,
            dead_letter_undecodable=False,
        )

    def start(self, supervisor: Supervisor | None = None) -> AlerterService:
        """Start the dispatchers and the consumer, under ``supervisor`` when given."""
        if supervisor is not None:
            self.supervisor = supervisor
        for name, channel in self.cfg.channels.items():
            log.info(
                "alert channel %s: %s (min severity %s)", name, channel.type, channel.min_severity
            )
        for dispatcher in self.dispatchers.values():
            dispatcher.start()
        self.flusher.start()
        self.consumer = self._consumer()
        self._thread = self.supervisor.start("alerter consumer", self.consumer.run)
        return self

    def wait(self, stop: threading.Event) -> None:
        """Block until ``stop`` is set; raise ServiceFailed if the consumer stops on its own."""
        self.supervisor.wait(stop)

    def stop(self) -> None:
        self.supervisor.stop()  # the consumer ending from here on is the shutdown
        stop_consumer(self.consumer, self._thread)
        self.consumer = None
        self.flusher.stop()
        for dispatcher in self.dispatchers.values():
            dispatcher.stop()
        self.engine.dispose()

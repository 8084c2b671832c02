"""The alerter: its own consumer group on releases, runs, decisions and the DLQ.

Being a separate group, it never slows the promoter or the workers; its handler only
queues rows in the state store (milliseconds), and the channel dispatchers deliver them.
"""

from __future__ import annotations

import logging
import threading

from kafka.consumer.fetcher import ConsumerRecord

from registry.alerts.dispatcher import ChannelDispatcher
from registry.alerts.router import enqueue
from registry.alerts.rules import ACCEPTED, alerts_for
from registry.db import make_engine
from uptake.bus import EventConsumer, EventProducer
from uptake.events import Event
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
        self.queued = 0
        self._producer = producer
        self.consumer: EventConsumer | None = None
        self._thread: threading.Thread | None = None

    def handle(self, event: Event, record: ConsumerRecord | None = None) -> None:
        for alert in alerts_for(event, self.cfg, self.mlflow_url):
            queued = enqueue(self.engine, alert, self.cfg)
            self.queued += queued
            if queued:
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

    def start(self) -> AlerterService:
        for name, channel in self.cfg.channels.items():
            log.info(
                "alert channel %s: %s (min severity %s)", name, channel.type, channel.min_severity
            )
        for dispatcher in self.dispatchers.values():
            dispatcher.start()
        self.consumer = self._consumer()
        self._thread = threading.Thread(
            target=self.consumer.run, name="uptake-alerter", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self.consumer is not None:
            self.consumer.stop()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
        for dispatcher in self.dispatchers.values():
            dispatcher.stop()
        self.engine.dispose()

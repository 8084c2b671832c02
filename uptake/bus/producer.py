"""Idempotent, acknowledged event producer (``acks=all``, idempotence on, retries)."""

from __future__ import annotations

from kafka import KafkaProducer

from uptake.bus.topics import topic_for
from uptake.events import Event
from uptake.settings import Settings


class EventProducer:
    """Publishes events keyed per DESIGN.md and waits for the broker's acknowledgement.

    ``publish`` returns only once the write is durable, so a caller may then mark its own
    state (an outbox row, a committed offset) as done.
    """

    def __init__(
        self,
        settings: Settings,
        producer_name: str | None = None,
        *,
        max_request_bytes: int = 1024 * 1024,
    ) -> None:
        """``max_request_bytes``: the largest request this producer sends (kafka-python's
        default); a record over it fails at once with ``MessageSizeTooLargeError``."""
        self.settings = settings
        self.producer_name = producer_name or settings.kafka.client_id
        self._producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=f"{settings.kafka.client_id}-{self.producer_name}",
            acks="all",
            enable_idempotence=True,
            retries=max(settings.kafka.max_retries, 1),
            retry_backoff_ms=int(settings.kafka.retry_backoff_s * 1000),
            request_timeout_ms=settings.kafka.request_timeout_ms,
            linger_ms=5,
            max_request_size=max_request_bytes,
        )

    def publish(self, event: Event, topic: str | None = None, timeout_s: float = 30.0) -> int:
        """Send one event and block until acknowledged; return its offset."""
        return self.send_raw(
            topic or topic_for(self.settings, event), event.key(), event.to_json(), timeout_s
        )

    def send_raw(
        self, topic: str, key: str | None, value: bytes | None, timeout_s: float = 30.0
    ) -> int:
        """Send bytes as they are (DLQ copies, tests of poison messages)."""
        future = self._producer.send(
            topic, key=key.encode("utf-8") if key is not None else None, value=value
        )
        offset: int = future.get(timeout=timeout_s).offset
        return offset

    def flush(self, timeout_s: float = 30.0) -> None:
        self._producer.flush(timeout=timeout_s)

    def close(self) -> None:
        self._producer.close(timeout=10)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

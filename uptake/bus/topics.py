"""Topic names and creation: every service ensures the topics it touches exist at start."""

from __future__ import annotations

import logging

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from uptake.events import Event
from uptake.settings import Settings

log = logging.getLogger(__name__)


def topic_for(settings: Settings, event: Event | type[Event]) -> str:
    """The configured Kafka topic for an event's logical topic (releases/runs/decisions/dlq)."""
    topic: str = getattr(settings.kafka.topics, event.TOPIC)
    return topic


def all_topics(settings: Settings) -> list[str]:
    return list(settings.kafka.topics.model_dump().values())


def ensure_topics(settings: Settings, topics: list[str] | None = None) -> list[str]:
    """Create missing topics with the configured partitions; return the ones created."""
    wanted = topics or all_topics(settings)
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=f"{settings.kafka.client_id}-admin",
        request_timeout_ms=settings.kafka.request_timeout_ms,
    )
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        created: list[str] = []
        for name in missing:
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            name,
                            num_partitions=settings.kafka.partitions,
                            replication_factor=settings.kafka.replication_factor,
                        )
                    ]
                )
                created.append(name)
            except TopicAlreadyExistsError:  # another service won the race
                pass
        if created:
            log.info("created topics %s", created)
        return created
    finally:
        admin.close()

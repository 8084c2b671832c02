"""The Kafka bus: topics, an idempotent event producer, and a consumer with DLQ and long jobs."""

from uptake.bus.consumer import EventConsumer, Handled, ThreadJob
from uptake.bus.jobs import JobOutcome, LongJob
from uptake.bus.producer import EventProducer
from uptake.bus.topics import ensure_topics, topic_for

__all__ = [
    "EventConsumer",
    "EventProducer",
    "Handled",
    "JobOutcome",
    "LongJob",
    "ThreadJob",
    "ensure_topics",
    "topic_for",
]

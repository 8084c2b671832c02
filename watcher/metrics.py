"""Prometheus metrics of one watcher, in its own registry (several can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)


class WatcherMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.polls = Counter(
            "uptake_watcher_polls",
            "Polls of a source, by outcome",
            ["source", "outcome"],
            registry=r,
        )
        self.requests = Counter(
            "uptake_watcher_requests", "HTTP requests sent to a hub", ["source"], registry=r
        )
        self.failures = Counter(
            "uptake_watcher_failures", "Failed polls, by kind", ["source", "kind"], registry=r
        )
        self.consecutive_failures = Gauge(
            "uptake_watcher_consecutive_failures", "Failed polls in a row", ["source"], registry=r
        )
        self.releases = Counter(
            "uptake_watcher_releases_published",
            "release.detected events acknowledged by the broker",
            ["source"],
            registry=r,
        )
        self.skips = Counter(
            "uptake_watcher_skips", "Repos skipped by a filter", ["source", "reason"], registry=r
        )
        self.publish_failures = Counter(
            "uptake_watcher_publish_failures", "Failed attempts to publish a release", registry=r
        )
        self.outbox_pending = Gauge(
            "uptake_watcher_outbox_pending", "Releases stored but not yet acknowledged", registry=r
        )
        self.alerts = Counter(
            "uptake_watcher_alerts", "Alert events published", ["source", "state"], registry=r
        )
        self.detection_latency = Histogram(
            "uptake_watcher_detection_latency_seconds",
            "From the repo's createdAt/lastModified to its event acknowledged by the broker",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.poll_duration = Histogram(
            "uptake_watcher_poll_duration_seconds", "Wall time of one poll", ["source"], registry=r
        )
        self.webhooks = Counter(
            "uptake_watcher_webhooks", "Hub webhook deliveries, by outcome", ["outcome"], registry=r
        )
        self.last_success = Gauge(
            "uptake_watcher_last_success_timestamp_seconds",
            "Unix time of the last successful poll",
            ["source"],
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent): for tests, benchmarks and status."""
        got = self.registry.get_sample_value(name, labels)
        return 0.0 if got is None else got

"""Prometheus metrics of one serving process, on a registry of its own (no global state, so
several servers in one test process each count only their own requests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "uptake_serving_requests",
            "Chat completion requests by answer status.",
            ["model", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "uptake_serving_request_seconds",
            "Time to the last byte of a chat completion.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "uptake_serving_tokens",
            "Tokens read (prompt) and generated (completion).",
            ["model", "kind"],
            registry=r,
        )
        self.swaps = Counter(
            "uptake_serving_swaps",
            "Versions switched to (the first load included).",
            ["model"],
            registry=r,
        )
        self.swap_failures = Counter(
            "uptake_serving_swap_failures",
            "Versions that failed to load or warm (old one kept).",
            ["model"],
            registry=r,
        )
        self.version = Gauge(
            "uptake_serving_version",
            "1 for the version answering for each model.",
            ["model", "version"],
            registry=r,
        )
        self.in_flight = Gauge(
            "uptake_serving_in_flight",
            "Requests being answered.",
            ["model"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "uptake_serving_queue_depth",
            "Requests waiting for a batch on the version answering (vLLM engine: in flight).",
            ["model"],
            registry=r,
        )

    def observe_queues(self, depths: dict[str, int]) -> None:
        """Set each model's queue depth (read when /metrics is scraped)."""
        for model, depth in depths.items():
            self.queue_depth.labels(model).set(depth)

    def switched(self, model: str, old: str | None, new: str) -> None:
        if old is not None and (model, old) in self._versions():
            self.version.remove(model, old)
        self.version.labels(model, new).set(1)
        self.swaps.labels(model).inc()

    def _versions(self) -> set[tuple[str, str]]:
        return {
            (s.labels["model"], s.labels["version"])
            for metric in self.version.collect()
            for s in metric.samples
        }

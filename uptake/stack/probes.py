"""Reachability checks for the broker and MLflow, shared by `up`, `status` and tests."""

from __future__ import annotations

import httpx


def kafka_healthy(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """True when a Kafka client can fetch cluster metadata (ApiVersions + Metadata)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(timeout_s * 1000),
            client_id="uptake-probe",
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def mlflow_healthy(tracking_uri: str, timeout_s: float = 3.0) -> bool:
    """True when the tracking server answers ``GET /health`` with 200."""
    try:
        return httpx.get(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False

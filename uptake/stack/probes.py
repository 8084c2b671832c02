"""Reachability checks for the broker and MLflow, shared by `up`, `status` and tests."""

from __future__ import annotations

import socket

import httpx


def _accepts_connections(bootstrap: str, timeout_s: float) -> bool:
    """A plain TCP connect to any bootstrap address: a broker still starting refuses it, and
    checking first spares the log kafka-python's ERROR lines for every refused attempt."""
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


def kafka_healthy(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """True when a Kafka client can fetch cluster metadata (ApiVersions + Metadata)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    if not _accepts_connections(bootstrap, timeout_s):
        return False
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


def wait_for_mlflow(tracking_uri: str, within_s: float = 60.0) -> bool:
    """True once MLflow answers within ``within_s``: a service started right after the server
    (``uptake up``, compose) must ride out a slow first answer on a loaded machine, not exit."""
    import time

    deadline = time.monotonic() + within_s
    while True:
        if mlflow_healthy(tracking_uri, timeout_s=min(10.0, max(1.0, within_s))):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)

"""Registry webhooks on the real MLflow server (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from mlflow import MlflowClient

from tests.conftest import MlflowServer
from uptake.webhooks import (
    WebhookRejected,
    sign_mlflow,
    verify_mlflow_signature,
    verify_shared_secret,
)

SECRET = "whsec-test-123"


class _Receiver(BaseHTTPRequestHandler):
    deliveries: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).deliveries.append((dict(self.headers.items()), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver():
    handler = type("Receiver", (_Receiver,), {"deliveries": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/mlflow", handler.deliveries
    server.shutdown()
    server.server_close()


def test_encryption_key_is_set_and_kept_private(mlflow_server: MlflowServer) -> None:
    key_file = mlflow_server.state_dir / "mlflow" / "webhook-encryption.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert len(key_file.read_text().strip()) == 44  # a Fernet key


def test_webhook_is_created_and_delivered_signed_to_loopback(
    mlflow_server: MlflowServer, receiver
) -> None:
    url, deliveries = receiver
    client = MlflowClient(
        tracking_uri=mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri
    )
    hook = client.create_webhook(
        name=f"uptake-test-{mlflow_server.backend}",
        url=url,
        events=["model_version_tag.set"],
        secret=SECRET,
    )
    assert hook.url == url
    name = f"webhook-model-{mlflow_server.backend}"
    client.create_registered_model(name)
    run = client.create_run(client.create_experiment(f"webhooks-{mlflow_server.backend}"))
    version = client.create_model_version(
        name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    time.sleep(1.5)  # the server caches webhooks per event for MLFLOW_WEBHOOK_CACHE_TTL=1 s
    client.set_model_version_tag(name, version.version, "approval", "approved")
    deadline = time.monotonic() + 30
    while not deliveries and time.monotonic() < deadline:
        time.sleep(0.2)
    assert deliveries, "no webhook delivery arrived"
    headers, body = deliveries[0]
    verified = verify_mlflow_signature(SECRET, headers, body)
    assert verified.delivery_id
    payload = json.loads(body)
    assert (payload["entity"], payload["action"]) == ("model_version_tag", "set")
    assert payload["data"]["name"] == name and payload["data"]["key"] == "approval"
    assert payload["data"]["value"] == "approved"
    with pytest.raises(WebhookRejected, match="bad MLflow signature"):
        verify_mlflow_signature("wrong-secret", headers, body)


def test_forged_and_stale_signatures_are_rejected() -> None:
    body = b'{"entity": "model_version_tag"}'
    now = 1_800_000_000
    headers = {
        "X-MLflow-Delivery-Id": "d1",
        "X-MLflow-Timestamp": str(now),
        "X-MLflow-Signature": sign_mlflow(SECRET, "d1", str(now), body.decode()),
    }
    assert verify_mlflow_signature(SECRET, headers, body, now=now).delivery_id == "d1"
    with pytest.raises(WebhookRejected, match="signature"):
        verify_mlflow_signature(SECRET, headers, body + b" ", now=now)
    with pytest.raises(WebhookRejected, match="stale"):
        verify_mlflow_signature(SECRET, headers, body, now=now + 3600)
    with pytest.raises(WebhookRejected, match="missing"):
        verify_mlflow_signature(SECRET, {"X-MLflow-Timestamp": str(now)}, body, now=now)


@pytest.mark.parametrize("secret", ["", "short"])
def test_empty_or_short_secrets_never_verify(secret: str) -> None:
    """compare_digest("", "") is True: an unset secret must not open the door."""
    with pytest.raises(WebhookRejected, match="not configured or shorter"):
        verify_shared_secret(secret, {"X-Webhook-Secret": secret})
    now = 1_800_000_000
    headers = {
        "X-MLflow-Delivery-Id": "d1",
        "X-MLflow-Timestamp": str(now),
        "X-MLflow-Signature": sign_mlflow(secret, "d1", str(now), "{}"),
    }
    with pytest.raises(WebhookRejected, match="not configured or shorter"):
        verify_mlflow_signature(secret, headers, b"{}", now=now)


@pytest.mark.parametrize("timestamp", ["²", "١٧٠٠٠٠٠٠٠٠", "1" * 5000, "-1", " 1"])
def test_timestamps_other_than_ascii_digits_are_refused(timestamp: str) -> None:
    """ "²".isdigit() is True and int("²") raises: a 500 before; now a refusal (401)."""
    headers = {
        "X-MLflow-Delivery-Id": "d1",
        "X-MLflow-Timestamp": timestamp,
        "X-MLflow-Signature": sign_mlflow(SECRET, "d1", timestamp, "{}"),
    }
    with pytest.raises(WebhookRejected, match="malformed MLflow timestamp"):
        verify_mlflow_signature(SECRET, headers, b"{}", now=1_800_000_000)


def test_signatures_and_shared_secrets_are_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both checks go through hmac.compare_digest (a spy around the real function)."""
    import hmac

    from uptake import webhooks

    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(webhooks.hmac, "compare_digest", spy)
    now = 1_800_000_000
    headers = {
        "X-MLflow-Delivery-Id": "d1",
        "X-MLflow-Timestamp": str(now),
        "X-MLflow-Signature": "v1,forged",
    }
    with pytest.raises(WebhookRejected, match="bad MLflow signature"):
        verify_mlflow_signature(SECRET, headers, b"{}", now=now)
    assert compared[-1][1] == b"v1,forged"
    with pytest.raises(WebhookRejected, match="bad or missing"):
        verify_shared_secret(SECRET, {"X-Webhook-Secret": "guess-guess"})
    assert compared[-1] == (b"guess-guess", SECRET.encode())
    verify_shared_secret(SECRET, {"X-Webhook-Secret": SECRET})
    assert len(compared) == 3

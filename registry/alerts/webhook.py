"""Generic JSON webhook: the alert itself, versioned, optionally HMAC-signed.

Body: ``{"schema_version": 1, "alert": {...}}``. Headers: ``X-Uptake-Delivery`` (stable
across retries, for the receiver's de-duplication), and with a secret
``X-Uptake-Timestamp`` plus ``X-Uptake-Signature: sha256=<hex HMAC of "{timestamp}.{body}">``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from registry.alerts.http import ChannelNotReady, OutgoingRequest
from registry.alerts.model import Alert
from uptake.registry_config import WebhookChannel, secret_from_env

SCHEMA_VERSION = 1


def payload(alert: Alert) -> dict:
    return {"schema_version": SCHEMA_VERSION, "alert": alert.model_dump(mode="json")}


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def build(alert: Alert, channel: WebhookChannel, delivery_id: str) -> OutgoingRequest:
    url = channel.url or secret_from_env(channel.url_env)
    if url is None:
        raise ChannelNotReady(f"webhook URL not set (environment variable {channel.url_env})")
    body = json.dumps(payload(alert)).encode()
    headers = {"Content-Type": "application/json", "X-Uptake-Delivery": delivery_id}
    if channel.secret_env:
        secret = secret_from_env(channel.secret_env)
        if secret is None:
            raise ChannelNotReady(
                f"webhook signing secret not set (environment variable {channel.secret_env})"
            )
        timestamp = str(int(time.time()))
        headers["X-Uptake-Timestamp"] = timestamp
        headers["X-Uptake-Signature"] = signature(secret, timestamp, body)
    return OutgoingRequest(url=url, headers=headers, body=body)

"""PagerDuty Events API v2 (https://developer.pagerduty.com/docs/events-api-v2/overview).

POST to ``/v2/enqueue``: ``trigger`` carries ``routing_key``, ``event_action``,
``dedup_key`` and a ``payload`` with ``summary`` (≤ 1024 chars), ``source``, ``severity``
(critical / error / warning / info), ``timestamp``, ``component``, ``group``, ``class`` and
``custom_details``; ``resolve`` needs only ``routing_key``, ``event_action`` and the same
``dedup_key``. PagerDuty answers 202; 429 and 5xx are retried, 400 is not.
"""

from __future__ import annotations

import hashlib
import json

from registry.alerts.http import ChannelNotReady, OutgoingRequest
from registry.alerts.model import Alert
from uptake.registry_config import PagerDutyChannel, secret_from_env

MAX_DEDUP_KEY = 255


def dedup_key(alert: Alert) -> str:
    key = alert.dedup_key
    if len(key) <= MAX_DEDUP_KEY:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return key[: MAX_DEDUP_KEY - 17] + "~" + digest


def payload(alert: Alert, routing_key: str) -> dict:
    if alert.action == "resolve":
        return {
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key(alert),
        }
    body: dict = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key(alert),
        "payload": {
            "summary": alert.summary[:1024],
            "source": alert.source,
            "severity": alert.severity,
            "timestamp": alert.occurred_at.isoformat(),
            "component": alert.source,
            "group": "uptake",
            "class": alert.kind,
            "custom_details": alert.details,
        },
        "client": "uptake",
    }
    if alert.links:
        body["links"] = [{"href": link.href, "text": link.text} for link in alert.links]
    return body


def build(alert: Alert, channel: PagerDutyChannel, delivery_id: str) -> OutgoingRequest:
    key = secret_from_env(channel.routing_key_env)
    if key is None:
        raise ChannelNotReady(
            f"PagerDuty routing key not set (environment variable {channel.routing_key_env})"
        )
    return OutgoingRequest(
        url=channel.events_url,
        headers={"Content-Type": "application/json"},
        body=json.dumps(payload(alert, key)).encode(),
    )

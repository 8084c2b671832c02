"""Slack incoming webhook (https://api.slack.com/messaging/webhooks).

POST ``{"text": ..., "blocks": [...]}`` as JSON to the webhook URL; ``text`` is the
notification fallback, the blocks the message (header ≤ 150 chars, section text ≤ 3000,
≤ 10 fields of ≤ 2000). Slack answers 200 ``ok``; 429 carries ``Retry-After``.
"""

from __future__ import annotations

import json

from registry.alerts.http import ChannelNotReady, OutgoingRequest
from registry.alerts.model import Alert
from uptake.registry_config import SlackChannel, secret_from_env

EMOJI = {"info": ":information_source:", "warning": ":warning:", "error": ":x:"}
EMOJI["critical"] = ":rotating_light:"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def payload(alert: Alert) -> dict:
    resolved = alert.action == "resolve"
    icon = ":white_check_mark:" if resolved else EMOJI[alert.severity]
    title = f"{'Resolved' if resolved else alert.severity.upper()}: {alert.kind.replace('_', ' ')}"
    text = f"{icon} {title} — {alert.summary}"
    fields = [
        {"type": "mrkdwn", "text": _cut(f"*{key}*\n{value}", 2000)}
        for key, value in list(alert.details.items())[:8]
        if value
    ]
    fields.insert(0, {"type": "mrkdwn", "text": f"*severity*\n{alert.severity}"})
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(f"{title}", 150)}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _cut(f"{icon} {alert.summary}", 3000)},
        },
        {"type": "section", "fields": fields[:10]},
    ]
    if alert.links:
        links = " · ".join(f"<{link.href}|{link.text}>" for link in alert.links)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(links, 3000)}})
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": _cut(f"uptake · {alert.source} · dedup `{alert.dedup_key}`", 3000),
                }
            ],
        }
    )
    return {"text": _cut(text, 3000), "blocks": blocks}


def build(alert: Alert, channel: SlackChannel, delivery_id: str) -> OutgoingRequest:
    url = secret_from_env(channel.url_env)
    if url is None:
        raise ChannelNotReady(f"Slack webhook URL not set (environment variable {channel.url_env})")
    body = json.dumps(payload(alert)).encode()
    return OutgoingRequest(url=url, headers={"Content-Type": "application/json"}, body=body)

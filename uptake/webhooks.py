"""Verification of inbound webhooks, always in constant time.

MLflow signs ``{delivery_id}.{timestamp}.{body}`` with HMAC-SHA256 and sends
``X-MLflow-Signature: v1,<base64>``; the Hugging Face Hub sends the shared secret as is in
``X-Webhook-Secret``. Both are compared with ``hmac.compare_digest``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Annotated

from pydantic import AfterValidator, BaseModel, SecretStr

from uptake.errors import PermanentError

MLFLOW_SIGNATURE_HEADER = "x-mlflow-signature"
MLFLOW_TIMESTAMP_HEADER = "x-mlflow-timestamp"
MLFLOW_DELIVERY_HEADER = "x-mlflow-delivery-id"
HF_SECRET_HEADER = "x-webhook-secret"


class WebhookRejected(PermanentError, ValueError):
    """The request is not provably from the expected sender; answer 401 and do nothing."""


MIN_SECRET_LENGTH = 8
MAX_TIMESTAMP_DIGITS = 12  # epoch seconds for the next 30,000 years; int() of it stays cheap


def _require_secret(secret: str) -> None:
    """An empty or short secret would let anyone through (``compare_digest("", "")`` is True)."""
    if len(secret) < MIN_SECRET_LENGTH:
        raise WebhookRejected(
            f"webhook secret is not configured or shorter than {MIN_SECRET_LENGTH} characters"
        )


def _long_enough(secret: SecretStr) -> SecretStr:
    if len(secret.get_secret_value()) < MIN_SECRET_LENGTH:
        raise ValueError(f"must be at least {MIN_SECRET_LENGTH} characters")
    return secret


WebhookSecret = Annotated[SecretStr, AfterValidator(_long_enough)]
"""A configured webhook secret: refused at start-up when too short, not request by request."""


class VerifiedDelivery(BaseModel):
    delivery_id: str
    timestamp: int


def _utf8(text: str) -> bytes:
    """UTF-8 that cannot fail: a secret from an env var with a non-UTF-8 byte arrives as a
    lone surrogate (``os.environ`` decodes with surrogateescape), and ``str.encode()`` of it
    would raise on every request instead of refusing it."""
    return text.encode("utf-8", "surrogatepass")


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def sign_mlflow(secret: str, delivery_id: str, timestamp: str, body: str) -> str:
    """The signature MLflow would send for this delivery (used by tests and tools)."""
    content = _utf8(f"{delivery_id}.{timestamp}.{body}")
    digest = hmac.new(_utf8(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_mlflow_signature(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    max_age_s: float = 300.0,
    now: float | None = None,
) -> VerifiedDelivery:
    """Check signature and freshness of an MLflow webhook delivery; raise WebhookRejected.

    Replays of a fresh delivery are caught by the caller remembering ``delivery_id``.
    """
    _require_secret(secret)
    h = _lower(headers)
    signature = h.get(MLFLOW_SIGNATURE_HEADER, "")
    timestamp = h.get(MLFLOW_TIMESTAMP_HEADER, "")
    delivery_id = h.get(MLFLOW_DELIVERY_HEADER, "")
    if not (signature and timestamp and delivery_id):
        raise WebhookRejected("missing MLflow signature, timestamp or delivery id header")
    # ASCII digits only: str.isdigit() also accepts "²" or "٣", which int() then refuses
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > MAX_TIMESTAMP_DIGITS:
        raise WebhookRejected("malformed MLflow timestamp header")
    age = (time.time() if now is None else now) - int(timestamp)
    if abs(age) > max_age_s:
        raise WebhookRejected(f"stale MLflow delivery ({age:.0f}s old)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookRejected("body is not UTF-8") from None
    expected = sign_mlflow(secret, delivery_id, timestamp, text)
    if not hmac.compare_digest(expected.encode(), _utf8(signature)):
        raise WebhookRejected("bad MLflow signature")
    return VerifiedDelivery(delivery_id=delivery_id, timestamp=int(timestamp))


def verify_shared_secret(
    secret: str, headers: Mapping[str, str], header: str = HF_SECRET_HEADER
) -> None:
    """Constant-time check of a shared-secret header (Hugging Face Hub webhooks)."""
    _require_secret(secret)
    given = _lower(headers).get(header.lower(), "")
    if not hmac.compare_digest(_utf8(given), _utf8(secret)):
        raise WebhookRejected(f"bad or missing {header}")

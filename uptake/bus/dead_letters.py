"""Dead letters that always fit in one Kafka record, whatever the message they describe.

A DLQ entry that copied a message whole could never be written for a message near the
broker's size limit (JSON-escaping 200 KB of control bytes makes 1.2 MB): the write failed,
the consumer rewound to the message, and its partition was stuck for good. So a letter
stores a bounded prefix of the value plus its size and sha256, and every free-text field is
capped; together they keep a letter far below ``MAX_RECORD_BYTES``.
"""

from __future__ import annotations

import base64
import hashlib

from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import MessageSizeTooLargeError, RecordListTooLargeError

from uptake.events import DeadLetter

MAX_RECORD_BYTES = 1024 * 1024  # kafka-python's default max_request_size; brokers' default too
PAYLOAD_BYTES = 64 * 1024  # of the original value (≤ 384 KiB once JSON-escaped)
KEY_BYTES = 1024
ERROR_CHARS = 8_000
NAME_CHARS = 256  # topic (Kafka allows 249) and consumer group

TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


def bounded_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters and made writable as UTF-8 (lone surrogates are
    written as backslash escapes such as ``\\ud800``: they would make the letter itself
    unencodable)."""
    if len(text) > limit:
        text = f"{text[:limit]}… ({len(text) - limit} more chars)"
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def _utf8_prefix(data: bytes, truncated: bool) -> str | None:
    """``data`` as text if it is UTF-8 (a character cut by the prefix is dropped), else None."""
    for cut in range(4 if truncated else 1):
        try:
            return data[: len(data) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def _key_text(key: bytes | None) -> tuple[str | None, bool]:
    if key is None:
        return None, False
    head = key[:KEY_BYTES]
    return head.decode("utf-8", errors="backslashreplace"), len(key) > KEY_BYTES


def dead_letter(
    record: ConsumerRecord,
    group: str,
    kind: str,
    reason: str,
    attempts: int,
    *,
    keep_payload: bool = True,
) -> DeadLetter:
    """The bounded DLQ entry for ``record``; ``keep_payload=False`` stores only size and hash
    (the fallback when a broker with a lower size limit refuses the full letter)."""
    value = record.value if isinstance(record.value, bytes) else None
    size = len(value) if value is not None else None
    digest = hashlib.sha256(value).hexdigest() if value is not None else None
    head = (value or b"")[:PAYLOAD_BYTES]
    truncated = size is not None and size > PAYLOAD_BYTES
    text = _utf8_prefix(head, truncated)
    if not keep_payload:
        payload, encoding, truncated = "", "omitted", bool(size)
    elif text is not None:
        payload, encoding = text, "utf-8"
    else:
        payload, encoding = base64.b64encode(head).decode("ascii"), "base64"
    key, key_truncated = _key_text(record.key)
    return DeadLetter(
        producer=bounded_text(group, NAME_CHARS),
        origin_topic=bounded_text(record.topic, NAME_CHARS),
        origin_partition=record.partition,
        origin_offset=record.offset,
        origin_key=key,
        origin_key_truncated=key_truncated,
        consumer_group=bounded_text(group, NAME_CHARS),
        error_kind=bounded_text(kind, NAME_CHARS),
        error=bounded_text(reason, ERROR_CHARS),
        attempts=attempts,
        payload=payload,
        payload_encoding=encoding,
        payload_size=size,
        payload_sha256=digest,
        payload_truncated=truncated,
    )

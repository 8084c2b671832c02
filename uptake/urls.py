"""URLs shown to people or written to events and logs carry no credentials.

An endpoint may be configured as ``https://user:token@mirror/...`` (a mirror behind basic
auth, an MLflow server behind its basic-auth app): the credentials are for the client that
calls it, never for a ``release.detected`` event, an alert link, a log line or a status page.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# scheme://<user-info>@ : user-info is everything up to the last "@" before the path
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)(?:[^/?#\s@]*@)+")


def redact_userinfo(url: str) -> str:
    """``url`` without its ``user:password@`` part (unchanged if it has none or is no URL)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub(r"\1", url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host))


def redact_urls(text: str) -> str:
    """Every URL in free text (an error message) without its user-info."""
    return _USERINFO.sub(r"\1", text)

"""How uptake writes rates and ids for people: one percent, one percentage-point difference,
one mark for a missing value and one way to shorten a long id.

The demo's table, the adoption report, the eval report and CLI, and the gate's reasons all
print pass rates; written here once, they agree on digits, units and the dash.
"""

from __future__ import annotations

from typing import Final

MISSING: Final = "—"  # a value that is not known (not measured, not logged, not decided yet)
ELLIPSIS: Final = "…"
REVISION_CHARS: Final = 12  # a revision (commit sha, content hash) shown as git shows a sha


def percent(rate: float | None, digits: int = 1) -> str:
    """A rate in [0, 1] as a percentage: ``0.2`` -> ``20.0%``; ``MISSING`` for None."""
    return MISSING if rate is None else f"{rate:.{digits}%}"


def points(diff: float | None, digits: int = 1, *, signed: bool = True) -> str:
    """A difference of two rates in percentage points: ``0.2`` -> ``+20.0 pt``."""
    if diff is None:
        return MISSING
    sign = "+" if signed else ""
    return f"{100 * diff:{sign}.{digits}f} pt"


def rate_change(before: float | None, after: float | None, digits: int = 0) -> str:
    """``20% → 40% (+20 pt)``; ``MISSING`` when either side is unknown."""
    if before is None or after is None:
        return MISSING
    return (
        f"{percent(before, digits)} → {percent(after, digits)} ({points(after - before, digits)})"
    )


def shorten(text: str, limit: int) -> str:
    """``text`` cut in the middle to at most ``limit`` characters, an ellipsis where it was
    cut: both ends of an id say the most (where it is from, which one)."""
    if len(text) <= limit:
        return text
    kept = max(limit - 1, 2)
    head = (kept + 1) // 2
    return text[:head] + ELLIPSIS + text[len(text) - (kept - head) :]


def short_release_id(release_id: str, limit: int = 40) -> str:
    """``demo:demo-org/tiny-llama@3f2a…(64 hex)`` -> ``demo:demo-org/tiny-llama@3f2a9c1b7e0d…``:
    the revision cut to ``REVISION_CHARS``, then the ``source:repo`` part cut in the middle
    when the whole is still longer than ``limit``. Show the full id beside it (a tooltip)."""
    base, at, revision = release_id.rpartition("@")
    if not at:
        return shorten(release_id, limit)
    if len(revision) > REVISION_CHARS:
        revision = revision[:REVISION_CHARS] + ELLIPSIS
    tail = at + revision
    return shorten(base, max(limit - len(tail), 8)) + tail

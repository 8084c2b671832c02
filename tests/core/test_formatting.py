"""The one way uptake writes rates and ids for people (uptake/formatting.py)."""

from __future__ import annotations

import pytest

from uptake.formatting import (
    ELLIPSIS,
    MISSING,
    percent,
    points,
    rate_change,
    short_release_id,
    shorten,
)


@pytest.mark.parametrize(
    ("rate", "digits", "text"),
    [(0.2, 1, "20.0%"), (0.36666, 1, "36.7%"), (1.0, 0, "100%"), (0.0, 1, "0.0%"), (None, 1, "—")],
)
def test_percent(rate: float | None, digits: int, text: str) -> None:
    assert percent(rate, digits) == text


def test_points_are_signed_percentage_points() -> None:
    assert points(0.2) == "+20.0 pt"
    assert points(-0.05, 2) == "-5.00 pt"
    assert points(0.1, 2, signed=False) == "10.00 pt"
    assert points(None) == MISSING


def test_rate_change() -> None:
    assert rate_change(0.0, 0.22) == "0% → 22% (+22 pt)"  # the README's per-area table
    assert rate_change(None, 0.5) == MISSING and rate_change(0.5, None) == MISSING


@pytest.mark.parametrize("limit", [3, 10, 11, 40])
def test_shorten_keeps_both_ends_within_the_limit(limit: int) -> None:
    text = "abcdefghijklmnopqrstuvwxyz0123456789" * 2
    short = shorten(text, limit)
    assert len(short) == limit and short.count(ELLIPSIS) == 1
    head, tail = short.split(ELLIPSIS)
    assert text.startswith(head) and text.endswith(tail)
    assert shorten("short", limit if limit >= 5 else 5) == "short"


def test_short_release_id() -> None:
    assert short_release_id("hf:acme/base@0123456789ab") == "hf:acme/base@0123456789ab"  # fits
    sha = "0123456789abcdef" * 4
    assert short_release_id(f"demo:demo-org/tiny-llama@{sha}") == (
        f"demo:demo-org/tiny-llama@0123456789ab{ELLIPSIS}"
    )
    long = f"hf:an-organisation-with-a-long-name/legal-memo-llama-3.3-70b-instruct@{sha}"
    short = short_release_id(long)
    assert (
        len(short) <= 40
        and short.startswith("hf:an-")
        and short.endswith(f"@0123456789ab{ELLIPSIS}")
    )
    assert short_release_id("x" * 60) == shorten("x" * 60, 40)  # not a release id: cut anyway

"""A growing answer's text and its stop texts, in time linear in its length
(``serving/engines/text_stream.py``)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from serving.engines.text_stream import IncrementalText, StopMatcher
from tests.serving.helpers import tiny_model


def reference(text: str, stops: list[str]) -> tuple[int | None, int]:
    """Where the first stop begins (brute force), and the longest end that begins one."""
    found = [s for s in stops if s in text]
    first = None
    if found:
        end = min(text.find(s) + len(s) for s in found)
        first = min(end - len(s) for s in found if text.find(s) + len(s) == end)
    hold = max((n for s in stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
    return first, hold


def test_matches_the_brute_force_answer_on_random_texts() -> None:
    rng = random.Random(7)
    for _ in range(400):
        stops = ["".join(rng.choice("ab") for _ in range(rng.randint(1, 5))) for _ in range(3)]
        text = "".join(rng.choice("abc") for _ in range(rng.randint(0, 30)))
        matcher = StopMatcher(stops)
        found, fed = None, ""
        for i in range(0, len(text), 3):  # fed a few characters at a time, as tokens come
            piece = text[i : i + 3]
            found = matcher.feed(piece)
            fed += piece
            if found is not None:
                break
            assert matcher.holdback == reference(fed, stops)[1], (fed, stops)
        expected = reference(fed, stops)[0]
        assert found == expected, (fed, stops)


def test_checking_long_stops_costs_time_linear_in_the_text() -> None:
    """Four stops of the longest length a request may send, each one character short of
    matching everywhere (the worst case for the old per-token suffix search)."""
    stops = ["a" * 255 + c for c in "bcde"]
    timings = []
    for n in (20_000, 80_000):
        matcher = StopMatcher(stops)
        started = time.process_time()
        for _ in range(n // 4):
            assert matcher.feed("aaaa") is None
            assert matcher.holdback == min(255, matcher.length)
        timings.append(time.process_time() - started)
    assert timings[1] < 8 * timings[0] + 0.05  # 4x the text: ~4x the time, not 16x
    assert timings[1] < 5.0


def test_incremental_text_is_the_whole_decode(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model(tmp_path / "m", seed=1))
    text = "The notice — served within thirty days — is late: €500, ünïcödé ✓ 日本語."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    stream = IncrementalText(lambda window: tokenizer.decode(window, skip_special_tokens=True))
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True) == text
    assert all("\ufffd" not in p for p in pieces)  # a split character waits for its last byte


@pytest.mark.parametrize("stops", [[], [""]])
def test_no_stops_never_match_nor_hold(stops: list[str]) -> None:
    matcher = StopMatcher(stops)
    assert matcher.feed("anything") is None and matcher.holdback == 0

"""A growing answer's text, kept in time linear in its length.

A row's text grows by a token at a time and is checked after each one: which new characters
the token added, whether a stop text now occurs, how much of the end might still become one
(held back from a stream). Decoding every id again and searching the whole text for every
prefix of every stop each time costs the square of the length times the stops' lengths
(four 200,000-character stops: 512 tokens 0.85 s, 4,096 tokens 74 s, on the version's only
batching thread). Here each token costs its own few characters:

- ``IncrementalText`` decodes only a window of the last ids (Hugging Face's and vLLM's
  incremental detokenization: the text of ``ids[prefix:]`` minus that of ``ids[prefix:read]``)
  and waits while the window ends in an incomplete UTF-8 sequence;
- ``StopMatcher`` runs one Knuth–Morris–Pratt automaton per stop text over the new characters:
  a match is found the moment it completes, and each automaton's state is the longest end of
  the text that begins its stop, which is exactly what a stream must hold back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"  # what a decoder writes for an incomplete UTF-8 sequence


class IncrementalText:
    """The text of a growing list of ids, decoded a window at a time."""

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self.ids: list[int] = []
        self._prefix = 0  # window start: decoded again for context (spaces, merges)
        self._read = 0  # ids whose text was already given out

    def push(self, token: int) -> str:
        """The characters ``token`` completes ("" while it ends in a partial character)."""
        self.ids.append(token)
        return self._advance(final=False)

    def flush(self) -> str:
        """Whatever is left undecoded (at the end, even an incomplete character)."""
        return self._advance(final=True)

    def _advance(self, *, final: bool) -> str:
        if self._read == len(self.ids):
            return ""
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) <= len(before) or (after.endswith(REPLACEMENT) and not final):
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        return after[len(before) :]


def _failure(pattern: str) -> list[int]:
    """KMP failure function: for each prefix, the length of its longest proper border."""
    fail = [0] * len(pattern)
    k = 0
    for i in range(1, len(pattern)):
        while k and pattern[i] != pattern[k]:
            k = fail[k - 1]
        if pattern[i] == pattern[k]:
            k += 1
        fail[i] = k
    return fail


class StopMatcher:
    """Finds the first stop text in a text fed piece by piece."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in dict.fromkeys(stops) if s]
        self._fail = [_failure(s) for s in self.stops]
        self._state = [0] * len(self.stops)
        self.length = 0  # characters fed so far

    def feed(self, text: str) -> int | None:
        """Feed the next characters; the index (in everything fed) where the first completed
        stop text begins, or None."""
        found: int | None = None
        for ch in text:
            self.length += 1
            for j, stop in enumerate(self.stops):
                k = self._state[j]
                while k and stop[k] != ch:
                    k = self._fail[j][k - 1]
                if stop[k] == ch:
                    k += 1
                if k == len(stop):
                    start = self.length - k
                    found = start if found is None else min(found, start)
                    k = self._fail[j][k - 1]
                self._state[j] = k
            if found is not None:
                return found
        return None

    @property
    def holdback(self) -> int:
        """Characters at the end that begin some stop text (hold them: they may become one)."""
        return max(self._state, default=0)

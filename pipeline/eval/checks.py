"""Deterministic graders: substring and regex checks on a Unicode-normalised response.

Both the response and the expected text go through NFKC, so a full-width "ＩＮＡ" or a
ligature "ﬁling" in a model's output matches the plain text a suite author typed.
``ignore_case`` compares case-folded text (``str.casefold``), which also folds "ß" to "ss".
Each check returns a verdict with a short reason, shown in results and reports.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from pydantic import BaseModel

from pipeline.eval.suite import (
    AllOfCheck,
    AnyOfCheck,
    ContainsCheck,
    DeterministicCheck,
    NotContainsCheck,
    RegexCheck,
)

_SNIPPET = 60


class CheckVerdict(BaseModel):
    passed: bool
    reason: str


def normalize(text: str, ignore_case: bool = False) -> str:
    """NFKC-normalise, and case-fold when the check ignores case."""
    text = unicodedata.normalize("NFKC", text)
    return text.casefold() if ignore_case else text


@lru_cache(maxsize=4096)
def _compile(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    flags = re.IGNORECASE if ignore_case else 0
    return re.compile(unicodedata.normalize("NFKC", pattern), flags)


def _short(text: str) -> str:
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 1] + "…"


def _found(value: str, response: str, ignore_case: bool) -> bool:
    return normalize(value, ignore_case) in normalize(response, ignore_case)


def run_check(check: DeterministicCheck, response: str) -> CheckVerdict:
    """Grade one response against one deterministic check."""
    if isinstance(check, ContainsCheck):
        ok = _found(check.value, response, check.ignore_case)
        return CheckVerdict(
            passed=ok, reason=f"{'found' if ok else 'missing'} {_short(check.value)!r}"
        )
    if isinstance(check, NotContainsCheck):
        bad = _found(check.value, response, check.ignore_case)
        word = "forbidden text present" if bad else "absent as required"
        return CheckVerdict(passed=not bad, reason=f"{word}: {_short(check.value)!r}")
    if isinstance(check, RegexCheck):
        match = _compile(check.pattern, check.ignore_case).search(normalize(response))
        if match:
            return CheckVerdict(passed=True, reason=f"matched {_short(match.group(0))!r}")
        return CheckVerdict(passed=False, reason=f"no match for /{_short(check.pattern)}/")
    if isinstance(check, AnyOfCheck | AllOfCheck):
        return _combine(check, response)
    raise TypeError(f"not a deterministic check: {check!r}")  # judge checks go to the judge


def _combine(check: AnyOfCheck | AllOfCheck, response: str) -> CheckVerdict:
    if check.values is not None:
        labels = [repr(_short(v)) for v in check.values]
        results = [_found(v, response, check.ignore_case) for v in check.values]
    else:
        subs = [run_check(sub, response) for sub in check.checks or []]
        labels = [s.reason for s in subs]
        results = [s.passed for s in subs]
    if isinstance(check, AnyOfCheck):
        hits = [label for label, ok in zip(labels, results, strict=True) if ok]
        if hits:
            return CheckVerdict(passed=True, reason=f"any_of satisfied by {hits[0]}")
        return CheckVerdict(passed=False, reason="none of: " + ", ".join(labels))
    misses = [label for label, ok in zip(labels, results, strict=True) if not ok]
    if misses:
        return CheckVerdict(passed=False, reason="all_of failed on: " + ", ".join(misses))
    return CheckVerdict(passed=True, reason=f"all {len(results)} present")

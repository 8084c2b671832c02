"""Deterministic checks: each type, case options and Unicode normalisation."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from pipeline.eval.checks import normalize, run_check
from pipeline.eval.suite import DeterministicCheck

ADAPTER: TypeAdapter[Any] = TypeAdapter(DeterministicCheck)


def passes(check: dict[str, Any], response: str) -> bool:
    return run_check(ADAPTER.validate_python(check), response).passed


MEMO = "Under INA 212(a)(9)(B) we Recommend filing within 30 days."


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        ({"type": "contains", "value": "INA 212(a)(9)(B)"}, True),
        ({"type": "contains", "value": "INA 212(a)(9)(C)"}, False),
        ({"type": "contains", "value": "recommend"}, False),  # case-sensitive by default
        ({"type": "contains", "value": "recommend", "ignore_case": True}, True),
        ({"type": "not_contains", "value": "guarantee"}, True),
        ({"type": "not_contains", "value": "30 days"}, False),
        ({"type": "not_contains", "value": "RECOMMEND", "ignore_case": True}, False),
        ({"type": "not_contains", "value": "RECOMMEND"}, True),
        ({"type": "regex", "pattern": r"\b\d+ days\b"}, True),
        ({"type": "regex", "pattern": r"recommend"}, False),
        ({"type": "regex", "pattern": r"recommend", "ignore_case": True}, True),
        ({"type": "regex", "pattern": r"(?i)RECOMMEND"}, True),
        ({"type": "any_of", "values": ["thirty days", "30 days"]}, True),
        ({"type": "any_of", "values": ["sixty days", "60 days"]}, False),
        ({"type": "any_of", "values": ["WITHIN"], "ignore_case": True}, True),
        ({"type": "all_of", "values": ["INA", "30 days"]}, True),
        ({"type": "all_of", "values": ["INA", "60 days"]}, False),
        ({"type": "all_of", "values": ["ina", "RECOMMEND"], "ignore_case": True}, True),
        (
            {
                "type": "all_of",
                "checks": [
                    {"type": "regex", "pattern": "INA \\d+"},
                    {"type": "not_contains", "value": "guarantee"},
                    {"type": "any_of", "values": ["x", "days"]},
                ],
            },
            True,
        ),
        (
            {
                "type": "any_of",
                "checks": [
                    {"type": "contains", "value": "nope"},
                    {"type": "not_contains", "value": "INA"},
                ],
            },
            False,
        ),
    ],
)
def test_check_types(check: dict[str, Any], expected: bool) -> None:
    assert passes(check, MEMO) is expected


def test_reasons_name_what_was_found_or_missing() -> None:
    check = ADAPTER.validate_python({"type": "all_of", "values": ["INA", "60 days"]})
    verdict = run_check(check, MEMO)
    assert not verdict.passed and "'60 days'" in verdict.reason and "'INA'" not in verdict.reason
    forbidden = ADAPTER.validate_python({"type": "not_contains", "value": "30 days"})
    assert "forbidden" in run_check(forbidden, MEMO).reason
    regex = ADAPTER.validate_python({"type": "regex", "pattern": r"\d+ days"})
    assert run_check(regex, MEMO).reason == "matched '30 days'"


def test_unicode_fullwidth_and_ligatures_match_plain_text() -> None:
    # Full-width letters and digits, and the "fi" ligature, are NFKC-equivalent to ASCII.
    response = "Ｕｎｄｅｒ ＩＮＡ ２１２ the ﬁling deadline is ３０ days."
    assert passes({"type": "contains", "value": "INA 212"}, response)
    assert passes({"type": "contains", "value": "filing"}, response)
    assert passes({"type": "regex", "pattern": r"\b30 days"}, response)
    assert not passes({"type": "not_contains", "value": "filing"}, response)


def test_unicode_in_the_expected_value_is_normalised_too() -> None:
    assert passes({"type": "contains", "value": "ＩＮＡ"}, "INA 208")
    # Composed vs decomposed é are the same text after NFKC.
    assert passes({"type": "contains", "value": "Café"}, "Cafe\u0301 lease")


def test_case_folding_handles_non_ascii() -> None:
    assert passes({"type": "contains", "value": "STRASSE", "ignore_case": True}, "Hauptstraße 5")
    assert not passes({"type": "contains", "value": "STRASSE"}, "Hauptstraße 5")
    assert passes({"type": "contains", "value": "ΣΟΦΙΑ", "ignore_case": True}, "σοφια")


def test_normalize() -> None:
    assert normalize("Ｆｉｌｅ") == "File"
    assert normalize("Ｆｉｌｅ", ignore_case=True) == "file"


def test_judge_checks_are_not_deterministic() -> None:
    from pipeline.eval.suite import JudgeCheck

    with pytest.raises(TypeError):
        run_check(JudgeCheck(type="judge"), "text")  # type: ignore[arg-type]

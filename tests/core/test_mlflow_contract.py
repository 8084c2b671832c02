"""The MLflow contract: practice-area metric keys are valid MLflow names and distinct per area.

Validity is checked with MLflow's own validator (``mlflow.utils.validation``), the one the
tracking server applies, so a name that passes here is one the server accepts.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from mlflow.utils.validation import _validate_metric

from uptake.mlflow_contract import (
    ALL_PASS_RATE,
    BASELINE_PREFIX,
    CI_SUFFIXES,
    CRITERION_PASS_RATE,
    DELTA_PREFIX,
    METRIC_KEY_MAX,
    area_from_metric_key,
    area_metric,
    area_metric_key,
)

# characters that break or merge names: path rules, the ".ci_low" suffix, the escape itself
TRICKY = st.text(alphabet=st.sampled_from("M&A_/.:- é\\x\x00ü漢"), max_size=40)
AREAS = st.one_of(TRICKY, st.text(max_size=40), st.text(min_size=200, max_size=400))
PREFIXES = ("", BASELINE_PREFIX, DELTA_PREFIX, DELTA_PREFIX + BASELINE_PREFIX)


# the names that are not per area: an area's name must never be one of them
FIXED = {
    prefix + metric + suffix
    for prefix, metric, suffix in itertools.product(
        PREFIXES, (ALL_PASS_RATE, CRITERION_PASS_RATE), ("", *CI_SUFFIXES)
    )
}


def _every_name(area: str) -> list[str]:
    return [
        area_metric(metric, area, prefix) + suffix
        for prefix, metric, suffix in itertools.product(
            PREFIXES, (ALL_PASS_RATE, CRITERION_PASS_RATE), ("", *CI_SUFFIXES)
        )
    ]


@settings(max_examples=400, deadline=None)
@given(AREAS)
@example("IP/Tech")
@example("IP//Tech")
@example("IP/")
@example("../etc")
@example("tax.ci_low")
@example("")
@example("ci_low")
@example("ci_high")
def test_every_area_metric_name_is_accepted_by_mlflow(area: str) -> None:
    key = area_metric_key(area)
    assert "." not in key and "/" not in key  # cannot run into a suffix or a path rule
    for name in _every_name(area):
        assert len(name) <= METRIC_KEY_MAX and name not in FIXED
        _validate_metric(name, 0.5, 0, 0)  # raises MlflowException on a name MLflow refuses


@settings(max_examples=300, deadline=None)
@given(st.lists(AREAS, unique=True, max_size=12))
@example(["M&A", "M_A", "M:26A", "M:3A26A"])
@example(["ci_low", ":63i_low", "c:69_low"])
@example(["IP/Tech", "IP_Tech", "IP:2FTech"])
@example(["x" * 300, "x" * 300 + "y", "x" * 299])
def test_area_metric_keys_are_distinct(areas: list[str]) -> None:
    assert len({area_metric_key(a) for a in areas}) == len(areas)


@settings(max_examples=300, deadline=None)
@given(st.one_of(TRICKY, st.text(max_size=60)))
def test_area_keys_read_back_as_the_area(area: str) -> None:
    assert area_from_metric_key(area_metric_key(area)) == area


@pytest.mark.parametrize(
    ("area", "key"),
    [
        ("immigration", "immigration"),
        ("landlord-tenant", "landlord-tenant"),
        ("M_A", "M_A"),
        ("M&A", "M:26A"),
        ("IP/Tech", "IP:2FTech"),
        ("Ausländerrecht", "Ausländerrecht"),
    ],
)
def test_plain_area_names_stay_readable(area: str, key: str) -> None:
    assert area_metric_key(area) == key
    assert area_from_metric_key(key) == area


def test_keys_logged_before_the_escape_read_back_unchanged() -> None:
    assert area_from_metric_key("IP/Tech") == "IP/Tech"
    assert area_from_metric_key("M_A") == "M_A"

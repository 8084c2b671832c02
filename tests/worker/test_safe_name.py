"""``safe_name``: a readable path component that never lets two ids share a folder."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.worker.job_spec import SAFE_NAME_CHARS, safe_name

ids = st.text(min_size=1, max_size=400)


@settings(max_examples=300, deadline=None)
@given(ids, ids)
def test_two_different_ids_never_share_a_folder(a: str, b: str) -> None:
    if a != b:
        assert safe_name(a) != safe_name(b)


@settings(max_examples=300, deadline=None)
@given(ids)
def test_the_name_is_one_bounded_path_component(text: str) -> None:
    name = safe_name(text)
    assert "/" not in name and "\\" not in name and "\0" not in name
    assert name not in {"", ".", ".."} and not name.startswith(".")
    assert len(name) <= SAFE_NAME_CHARS + 13


@given(st.text(alphabet="abcdefghij-_", min_size=1, max_size=SAFE_NAME_CHARS))
def test_a_short_safe_id_stays_readable_as_it_is(text: str) -> None:
    assert safe_name(text) == text


def test_two_long_ids_differing_past_the_cut_get_two_folders() -> None:
    """The defect: ``x*120 + "a"`` and ``x*120 + "b"`` both became ``x*120``."""
    base = "org/" + "m" * 200
    a, b = safe_name(base.replace("/", "_") + "a"), safe_name(base.replace("/", "_") + "b")
    assert a != b
    assert a.startswith("org_" + "m" * 50)  # still readable


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=SAFE_NAME_CHARS, max_size=300), st.text(max_size=20), st.text(max_size=20))
def test_long_ids_sharing_a_prefix_past_the_cut_never_share_a_folder(
    prefix: str, a: str, b: str
) -> None:
    if a != b:
        assert safe_name(prefix + a) != safe_name(prefix + b)

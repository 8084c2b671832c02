"""Suite loading: valid files, and one test per kind of validation error."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipeline.eval import load_suite
from pipeline.eval.suite import DEFAULT_MAX_NEW_TOKENS
from tests.eval.helpers import task, write_suite
from uptake.errors import InputError


def crit(cid: str = "c1", **check: object) -> dict[str, object]:
    return {"id": cid, "description": "d", "check": check or {"type": "contains", "value": "x"}}


def load_error(tmp_path: Path, lines: list[object]) -> str:
    path = write_suite(tmp_path / "suite.jsonl", lines)
    with pytest.raises(InputError) as info:
        load_suite(path)
    message = str(info.value)
    assert "\n" not in message  # the CLI prints it as one line
    return message


def test_valid_suite_loads_with_header_and_sha(tmp_path: Path) -> None:
    path = write_suite(
        tmp_path / "s.jsonl",
        [
            {"suite": {"name": "mini", "max_new_tokens": 40}},
            task("a", max_new_tokens=7),
            "",
            task("b", area="employment", criteria=[crit(type="judge"), crit("c2")]),
        ],
    )
    suite = load_suite(path)
    assert [t.id for t in suite.tasks] == ["a", "b"]
    assert suite.name == "mini"
    assert suite.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert suite.areas == ["employment", "immigration"]
    assert suite.n_criteria == 3
    assert suite.has_judge
    a, b = suite.tasks
    assert suite.max_new_tokens_for(a) == 7  # task beats suite
    assert suite.max_new_tokens_for(b) == 40  # suite header
    assert suite.max_new_tokens_for(b, 3) == 3  # explicit override beats both


def test_defaults_without_header(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path / "plain.jsonl", [task()]))
    assert suite.name == "plain"
    assert suite.max_new_tokens_for(suite.tasks[0]) == DEFAULT_MAX_NEW_TOKENS
    assert not suite.has_judge


def test_sha_changes_with_content(tmp_path: Path) -> None:
    one = load_suite(write_suite(tmp_path / "a.jsonl", [task("a")]))
    two = load_suite(write_suite(tmp_path / "b.jsonl", [task("b")]))
    assert one.sha256 != two.sha256


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="suite file not found"):
        load_suite(tmp_path / "nope.jsonl")


def test_empty_file(tmp_path: Path) -> None:
    assert "no tasks" in load_error(tmp_path, ["", "  "])


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"id": "caf\xe9"}\n')
    with pytest.raises(InputError, match="not UTF-8"):
        load_suite(path)


def test_invalid_json(tmp_path: Path) -> None:
    msg = load_error(tmp_path, [task("a"), "{not json"])
    assert "suite.jsonl:2: invalid JSON" in msg


def test_line_not_an_object(tmp_path: Path) -> None:
    assert "suite.jsonl:1: expected a JSON object, got list" in load_error(tmp_path, [[1, 2]])


def test_missing_messages(tmp_path: Path) -> None:
    line = task()
    del line["messages"]
    assert "suite.jsonl:1: messages: missing" in load_error(tmp_path, [line])


def test_empty_messages(tmp_path: Path) -> None:
    assert "suite.jsonl:1: messages: must not be empty" in load_error(tmp_path, [task(messages=[])])


def test_last_message_must_be_user(tmp_path: Path) -> None:
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert "last message must be from the user" in load_error(tmp_path, [task(messages=msgs)])


def test_empty_criteria(tmp_path: Path) -> None:
    line = task()
    line["criteria"] = []
    assert "suite.jsonl:1: criteria: must not be empty" in load_error(tmp_path, [line])


def test_duplicate_task_id(tmp_path: Path) -> None:
    msg = load_error(tmp_path, [task("a"), task("b"), task("a")])
    assert "suite.jsonl:3: duplicate task id 'a' (first on line 1)" in msg


def test_duplicate_criterion_id(tmp_path: Path) -> None:
    msg = load_error(tmp_path, [task(criteria=[crit("c1"), crit("c1")])])
    assert "suite.jsonl:1: criteria: duplicate criterion id 'c1'" in msg


def test_unknown_check_type(tmp_path: Path) -> None:
    msg = load_error(tmp_path, [task(criteria=[crit(type="startswith", value="x")])])
    assert "suite.jsonl:1: criteria.0.check: unknown check type 'startswith'" in msg


def test_missing_check_type(tmp_path: Path) -> None:
    msg = load_error(tmp_path, [task(criteria=[crit(value="x")])])
    assert "criteria.0.check: missing 'type'" in msg


def test_bad_regex(tmp_path: Path) -> None:
    msg = load_error(tmp_path, [task(criteria=[crit(type="regex", pattern="(unclosed")])])
    assert "suite.jsonl:1: criteria.0.check.pattern: bad regex '(unclosed'" in msg


def test_bad_nested_regex(tmp_path: Path) -> None:
    nested = {"type": "any_of", "checks": [{"type": "regex", "pattern": "[a-"}]}
    msg = load_error(tmp_path, [task(criteria=[crit(**nested)])])
    assert "criteria.0.check.checks.0.pattern: bad regex" in msg


def test_combinator_needs_values_or_checks(tmp_path: Path) -> None:
    msg = load_error(tmp_path, [task(criteria=[crit(type="all_of")])])
    assert "all_of needs exactly one of 'values' or 'checks'" in msg


def test_judge_not_allowed_nested(tmp_path: Path) -> None:
    nested = {"type": "any_of", "checks": [{"type": "judge"}]}
    msg = load_error(tmp_path, [task(criteria=[crit(**nested)])])
    assert "'judge' is not allowed inside any_of/all_of" in msg


def test_unknown_field(tmp_path: Path) -> None:
    assert "suite.jsonl:1: practise_area: unknown field" in load_error(
        tmp_path, [task(practise_area="typo")]
    )


def test_header_not_first(tmp_path: Path) -> None:
    msg = load_error(tmp_path, [task(), {"suite": {"name": "late"}}])
    assert "suite.jsonl:2: the suite header must be the first line" in msg


def test_every_bad_line_in_one_error(tmp_path: Path) -> None:
    line_without_messages = task("b")
    del line_without_messages["messages"]
    msg = load_error(
        tmp_path,
        [
            task("a"),
            line_without_messages,
            "nope",
            task("d", criteria=[crit(type="regex", pattern="(")]),
            task("a"),
        ],
    )
    assert msg.startswith("invalid suite ")
    assert "(4 problems)" in msg
    for line in (2, 3, 4, 5):
        assert f"suite.jsonl:{line}:" in msg
    assert "suite.jsonl:1:" not in msg


def test_cli_invalid_suite_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    from uptake.cli import main

    path = write_suite(tmp_path / "bad.jsonl", [task(criteria=[crit(type="nope")])])
    with pytest.raises(SystemExit) as info:
        main(["eval", "--model", str(tmp_path / "no-model"), "--suite", str(path), "--json"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: invalid suite") and "bad.jsonl:1:" in err
    assert len(err.splitlines()) == 1

"""Hostile suites, results and training files: one clear InputError or a correct load.

Each test is a defect once seen: a line JSON cannot parse at all (too deep, an integer over
Python's digit limit) escaping as RecursionError/ValueError, unbounded numbers, and files
cut at U+2028/U+0085 by ``str.splitlines`` (a model's own answer corrupting its results).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.eval import EvalResult, TaskResult, compute_metrics, load_suite, save_results
from pipeline.eval.holdout import find_overlap
from pipeline.eval.results import load_results
from pipeline.eval.suite import MAX_NEW_TOKENS_LIMIT
from tests.eval.helpers import task, write_suite
from uptake.errors import InputError

SEPARATORS = ["\u2028", "\u2029", "\x85"]  # line breaks to str.splitlines, not to JSONL


def suite_error(tmp_path: Path, lines: list[object]) -> str:
    with pytest.raises(InputError) as info:
        load_suite(write_suite(tmp_path / "suite.jsonl", lines))
    assert "\n" not in str(info.value)
    return str(info.value)


def test_a_deeply_nested_suite_line_is_a_bad_line(tmp_path: Path) -> None:
    msg = suite_error(tmp_path, [task("a"), "[" * 100_000, task("b")])
    assert "suite.jsonl:2: invalid JSON (nested too deeply)" in msg and "1 problem)" in msg


def test_an_integer_over_the_digit_limit_is_a_bad_line(tmp_path: Path) -> None:
    line = json.dumps(task()).replace('"t1"', "9" * 5000)
    msg = suite_error(tmp_path, [line])
    assert "suite.jsonl:1: invalid JSON (Exceeds the limit (4300 digits)" in msg
    assert len(msg) < 300  # the number itself is not echoed


def test_max_new_tokens_is_bounded_everywhere(tmp_path: Path) -> None:
    msg = suite_error(tmp_path, [task(max_new_tokens=10**12)])
    assert f"max_new_tokens: Input should be less than or equal to {MAX_NEW_TOKENS_LIMIT}" in msg
    msg = suite_error(tmp_path, [{"suite": {"max_new_tokens": 10**12}}, task()])
    assert "suite.max_new_tokens: Input should be less than or equal to" in msg
    suite = load_suite(
        write_suite(tmp_path / "ok.jsonl", [task(max_new_tokens=MAX_NEW_TOKENS_LIMIT)])
    )
    with pytest.raises(InputError, match=f"max_new_tokens must be 1..{MAX_NEW_TOKENS_LIMIT}"):
        suite.max_new_tokens_for(suite.tasks[0], 10**12)  # the --max-new-tokens override


@pytest.mark.parametrize("pattern", ["(" * 2000, "a{99999999999}"], ids=["recursion", "overflow"])
def test_a_regex_that_crashes_the_parser_is_a_bad_regex(tmp_path: Path, pattern: str) -> None:
    crit = {"id": "c1", "description": "d", "check": {"type": "regex", "pattern": pattern}}
    msg = suite_error(tmp_path, [task(criteria=[crit])])
    assert "criteria.0.check.pattern: bad regex" in msg


@pytest.mark.parametrize("sep", SEPARATORS, ids=["U+2028", "U+2029", "U+0085"])
def test_a_prompt_with_a_unicode_line_separator_loads_whole(tmp_path: Path, sep: str) -> None:
    prompt = f"First paragraph.{sep}Second paragraph?"
    path = tmp_path / "s.jsonl"
    rows = [task("a", prompt=prompt), task("b")]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    suite = load_suite(path)
    assert [t.id for t in suite.tasks] == ["a", "b"] and suite.tasks[0].prompt == prompt


def _result(response: str) -> EvalResult:
    tasks = [
        TaskResult(
            task_id=f"t{i}",
            practice_area="tax",
            messages=[{"role": "user", "content": f"q{sep}{i}"}],
            response=f"{response}{sep}{i}",
            criteria=[{"id": "c1", "description": "d", "type": "contains", "passed": i % 2 == 0,
                       "reason": f"why{sep}"}],
        )
        for i, sep in enumerate(SEPARATORS * 2)
    ]  # fmt: skip
    return EvalResult(
        model="m",
        backend="test",
        suite_name="s",
        suite_sha256="a" * 64,
        tasks=tasks,
        metrics=compute_metrics(tasks, n_boot=50),
    )


def test_an_answer_with_line_separators_cannot_corrupt_its_results_file(tmp_path: Path) -> None:
    result = _result("Memo.\u2028Recommendation:\x85file by Friday.")
    path = save_results(result, tmp_path / "results.jsonl")
    text = path.read_text(encoding="utf-8")
    assert not any(sep in text for sep in SEPARATORS)  # escaped: safe for any line reader
    assert len(text.splitlines()) == len(result.tasks)
    back = load_results(path, n_boot=50)
    assert [t.response for t in back.tasks] == [t.response for t in result.tasks]
    assert back.metrics.all_pass_rate == result.metrics.all_pass_rate

    # a file written by another tool, separators raw: still one row per "\n"-line
    raw = tmp_path / "raw.jsonl"
    rows = [json.loads(line) for line in text.split("\n") if line]
    raw.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    assert any(sep in raw.read_text(encoding="utf-8") for sep in SEPARATORS)
    assert [t.response for t in load_results(raw, n_boot=50).tasks] == [
        t.response for t in result.tasks
    ]


def test_the_gates_reader_sees_every_row_of_a_saved_results_file(tmp_path: Path) -> None:
    from registry.evidence import parse_results_jsonl

    result = _result("Answer\u2028with a separator")
    text = save_results(result, tmp_path / "r.jsonl").read_text(encoding="utf-8")
    outcomes = parse_results_jsonl(text)
    assert [o.task_id for o in outcomes] == [t.task_id for t in result.tasks]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("[" * 100_000, "invalid JSON (nested too deeply)"),
        ('{"task_id": ' + "9" * 5000 + "}", "invalid JSON (Exceeds the limit"),
    ],
    ids=["deep", "bignum"],
)
def test_a_results_line_json_cannot_parse_is_an_input_error(
    tmp_path: Path, line: str, reason: str
) -> None:
    path = save_results(_result("ok"), tmp_path / "r.jsonl")
    path.write_text(path.read_text(encoding="utf-8") + line + "\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_results(path)
    assert f"r.jsonl:7: {reason}" in str(info.value)


def test_results_counts_are_bounded(tmp_path: Path) -> None:
    path = save_results(_result("ok"), tmp_path / "r.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]
    rows[0]["n_tokens"] = 10**12
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(InputError, match=r"r\.jsonl:1: n_tokens: Input should be less than"):
        load_results(path)


def test_holdout_reads_training_rows_whole_and_reports_bad_lines(tmp_path: Path) -> None:
    prompt = "Part one.\u2028Part two?"
    suite = load_suite(write_suite(tmp_path / "s.jsonl", [task("a", prompt=prompt)]))
    train = tmp_path / "train.jsonl"
    row = {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": "x"}]}
    train.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    assert find_overlap(train, suite) == ["prompt of task 'a' (train.jsonl:1)"]
    train.write_text(json.dumps(row) + "\n" + "[" * 100_000 + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"train\.jsonl:2: invalid JSON \(nested too deeply\)"):
        find_overlap(train, suite)


def test_the_gates_reader_splits_on_newlines_only_and_refuses_unparsable_lines() -> None:
    from registry.evidence import parse_results_jsonl

    rows = [{"task_id": f"t{i}", "criteria": [{"passed": True}]} for i in range(2)]
    rows[0]["response"] = "one\u2028two\x85three"  # raw, as another writer may leave it
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    assert [o.task_id for o in parse_results_jsonl(text)] == ["t0", "t1"]
    with pytest.raises(ValueError, match="results line 3"):
        parse_results_jsonl(text + "[" * 100_000 + "\n")


def test_training_data_lines_json_cannot_parse_are_data_errors(tmp_path: Path) -> None:
    from pipeline.train.data import DataError, load_chat_rows

    row = {
        "messages": [{"role": "user", "content": "q\u2028"}, {"role": "assistant", "content": "a"}]
    }
    path = tmp_path / "train.jsonl"
    for bad in ("[" * 100_000, '{"n": ' + "9" * 5000 + "}"):
        path.write_text(json.dumps(row, ensure_ascii=False) + "\n" + bad + "\n", encoding="utf-8")
        with pytest.raises(DataError, match=r"train\.jsonl:2: invalid JSON"):
            load_chat_rows(path)

"""The example legal data: shape, held out from training, reproducible, and satisfiable."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from pipeline.eval import check_holdout, find_overlap, load_suite
from pipeline.eval.generate import Generation
from pipeline.eval.runner import grade_task
from tests.eval.helpers import LEGAL
from uptake.errors import InputError

DETERMINISTIC = {"contains", "not_contains", "regex", "any_of", "all_of"}


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("legal_generate", LEGAL / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


def train_rows() -> list[dict]:
    return [json.loads(line) for line in (LEGAL / "train.jsonl").read_text().splitlines()]


def test_training_set_shape() -> None:
    rows = train_rows()
    assert len(rows) >= 600
    for row in rows:
        assert set(row) == {"messages"}
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["user", "assistant"]
        assert "guarantee" not in row["messages"][1]["content"].lower()


def test_suite_shape(legal_suite) -> None:
    assert len(legal_suite.tasks) >= 120
    areas = Counter(t.practice_area for t in legal_suite.tasks)
    assert len(areas) >= 4 and min(areas.values()) >= 20
    for t in legal_suite.tasks:
        assert 3 <= len(t.criteria) <= 6, t.id
        assert {c.check.type for c in t.criteria} <= DETERMINISTIC
    kinds = Counter(c.check.type for t in legal_suite.tasks for c in t.criteria)
    assert set(kinds) == DETERMINISTIC  # every check type is exercised
    assert not legal_suite.has_judge


def test_no_suite_task_id_or_prompt_in_training_data(legal_suite) -> None:
    raw = (LEGAL / "train.jsonl").read_text()
    train_prompts = {row["messages"][0]["content"] for row in train_rows()}
    for t in legal_suite.tasks:
        assert t.id not in raw
        assert t.prompt not in train_prompts
        assert json.dumps(t.prompt)[1:-1] not in raw  # not even as part of a longer message
    assert find_overlap(LEGAL / "train.jsonl", legal_suite) == []
    check_holdout(LEGAL / "train.jsonl", legal_suite)


def test_suite_clients_are_new(legal_suite) -> None:
    raw = (LEGAL / "train.jsonl").read_text()
    for t in legal_suite.tasks:
        for c in t.criteria:
            if c.description.startswith("Carries over the client's name"):
                assert c.check.value not in raw  # type: ignore[union-attr]


def test_check_holdout_refuses_overlap(tmp_path: Path, legal_suite) -> None:
    first, second = legal_suite.tasks[0], legal_suite.tasks[5]
    leaked = tmp_path / "train.jsonl"
    rows = [
        *train_rows()[:20],
        {"id": first.id, "messages": [{"role": "user", "content": "unrelated"}]},
        # Same prompt, different case and spacing: still the same task.
        {
            "messages": [
                {"role": "user", "content": "  " + second.prompt.upper().replace(" ", "   ")}
            ]
        },
    ]
    leaked.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError) as info:
        check_holdout(leaked, legal_suite)
    message = str(info.value)
    assert "2 overlap(s)" in message
    assert f"task id {first.id!r} (train.jsonl:21)" in message
    assert f"prompt of task {second.id!r} (train.jsonl:22)" in message


def test_generator_is_deterministic_and_files_are_fresh(tmp_path: Path) -> None:
    check = subprocess.run(
        [sys.executable, str(LEGAL / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    subprocess.run([sys.executable, str(LEGAL / "generate.py"), "--out", str(tmp_path)], check=True)
    assert (tmp_path / "suite.jsonl").read_bytes() == (LEGAL / "suite.jsonl").read_bytes()
    stale = tmp_path / "suite.jsonl"
    stale.write_text(stale.read_text() + "\n{}\n")
    again = subprocess.run(
        [sys.executable, str(LEGAL / "generate.py"), "--check", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 1 and "stale" in again.stderr


def test_training_template_answers_pass_every_criterion(legal_suite) -> None:
    """A model that learnt the training templates perfectly scores 100% all-pass: the suite
    asks for exactly what the training data teaches, so the task is learnable."""
    answers = load_generator().reference_answers()
    assert set(answers) == {t.id for t in legal_suite.tasks}
    for t in legal_suite.tasks:
        graded = grade_task(
            t, Generation(text=answers[t.id], n_tokens=1, finish_reason="stop"), None
        )
        failed = [c.id for c in graded.criteria if not c.passed]
        assert not failed, (t.id, failed)


def test_reference_answers_fail_other_kinds(legal_suite) -> None:
    """The criteria discriminate: the answer for one kind of task fails another kind's."""
    answers = load_generator().reference_answers()
    by_kind = {t.metadata["kind"]: t for t in legal_suite.tasks}
    kinds = sorted(by_kind)
    for kind, other in zip(kinds, kinds[1:] + kinds[:1], strict=True):
        t = by_kind[kind]
        wrong = answers[by_kind[other].id]
        graded = grade_task(t, Generation(text=wrong, n_tokens=1, finish_reason="stop"), None)
        assert not graded.all_pass, (kind, other)


def test_suite_loads_from_generated_file(tmp_path: Path) -> None:
    suite = load_suite(LEGAL / "suite.jsonl")
    assert suite.name == "legal-example" and suite.max_new_tokens == 160

"""Agentic (LAB-format) suites: loading, validation naming file and field, hash, check, hold-out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.eval import check_holdout, load_suite
from pipeline.eval.agent.lab import AgenticSuite, check_summary, load_agentic_suite
from pipeline.eval.suites import suite_sha256
from tests.eval.agent_helpers import EXAMPLE, copy_example, lab_spec, lab_task
from uptake.errors import InputError


def test_the_example_suite_loads_as_it_is() -> None:
    suite = load_suite(EXAMPLE)
    assert isinstance(suite, AgenticSuite)
    assert [t.id for t in suite.tasks] == [
        "corporate/nda-review",
        "corporate/psa-term-sheet",
        "employment/severance-calc",
        "litigation/limitation-check",
    ]
    assert suite.areas == ["corporate", "employment", "litigation"]
    assert all(5 <= len(t.criteria) <= 15 for t in suite.tasks)
    psa = suite.tasks[1]
    assert psa.deliverables == {"term_sheet": "psa-term-sheet.docx"}
    assert [p.name for p in psa.documents()] == ["cap-table.xlsx", "draft-spa.docx"]
    assert suite.sha256 == suite_sha256(EXAMPLE)


def test_the_hash_covers_documents_and_task_files(tmp_path: Path) -> None:
    root = copy_example(tmp_path)
    before = load_agentic_suite(root).sha256
    doc = root / "tasks/employment/severance-calc/documents/employees.xlsx"
    doc.write_bytes(doc.read_bytes() + b"\0")
    after_doc = load_agentic_suite(root).sha256
    task_file = root / "tasks/litigation/limitation-check/task.json"
    task_file.write_text(task_file.read_text().replace("six-year", "6-year"))
    after_task = load_agentic_suite(root).sha256
    assert len({before, after_doc, after_task}) == 3
    (root / "tasks" / ".git").mkdir()  # a checkout's own files are not the suite
    (root / "tasks" / ".git" / "HEAD").write_text("x")
    assert load_agentic_suite(root).sha256 == after_task


def test_every_problem_is_named_by_file_and_field_at_once(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    no_title = lab_spec()
    del no_title["title"]
    lab_task(root, "corporate/no-title", no_title)
    bad_criterion = lab_spec()
    del bad_criterion["criteria"][0]["match_criteria"]
    lab_task(root, "corporate/bad-criterion", bad_criterion)
    unknown = lab_spec()
    unknown["criteria"][0]["deliverables"] = ["memo"]
    lab_task(root, "tax/unknown-deliverable", unknown)
    dup = lab_spec()
    dup["criteria"] = dup["criteria"] * 2
    lab_task(root, "tax/duplicate", dup)
    escape = lab_spec(deliverables={"summary": "../summary.md"})
    lab_task(root, "tax/escape", escape)
    broken = root / "tasks/tax/broken"
    broken.mkdir(parents=True)
    (broken / "task.json").write_text("{not json")
    with pytest.raises(InputError) as info:
        load_suite(root)
    text = str(info.value)
    assert "(6 problems)" in text
    assert f"{root}/tasks/corporate/no-title/task.json: title: Field required" in text
    assert "bad-criterion/task.json: criteria.0.match_criteria: Field required" in text
    assert (
        "unknown-deliverable/task.json: criteria.0.deliverables: unknown deliverable(s) 'memo'"
        in text
    )
    assert "duplicate/task.json: criteria: Value error, duplicate criterion id(s) 'C-001'" in text
    assert "escape/task.json: deliverables: Value error, deliverable 'summary'" in text
    assert "broken/task.json: <file>: invalid JSON" in text
    assert "\n" not in text


def test_a_task_outside_an_area_folder_and_a_symlink_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "s"
    lab_task(root, "loose", lab_spec())
    folder = lab_task(root, "tax/ok", lab_spec())
    (folder / "documents" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(InputError) as info:
        load_suite(root)
    assert "loose/task.json: <path>: a task lies at tasks/<practice-area>/<task>/task.json" in str(
        info.value
    )
    assert "documents/passwd: a symlink" in str(info.value)


def test_an_empty_directory_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no task\.json under"):
        load_suite(tmp_path)


def test_suite_check_prints_areas_criteria_types_and_hash() -> None:
    from uptake.cli import build_app

    app = build_app()

    result = CliRunner().invoke(app, ["suite", "check", str(EXAMPLE), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary == check_summary(load_agentic_suite(EXAMPLE)).model_dump()
    assert summary["per_area"] == {"corporate": 2, "employment": 1, "litigation": 1}
    assert summary["criteria_per_task"]["corporate/psa-term-sheet"] == 7
    assert summary["document_types"] == {"docx": 3, "eml": 2, "pdf": 1, "xlsx": 3}
    assert summary["sha256"] == suite_sha256(EXAMPLE)
    table = CliRunner().invoke(app, ["suite", "check", str(EXAMPLE)])
    assert table.exit_code == 0 and "litigation/limitation-check" in table.output


def test_holdout_covers_task_ids_and_instructions(tmp_path: Path) -> None:
    suite = load_agentic_suite(EXAMPLE)
    clean = tmp_path / "clean.jsonl"
    clean.write_text(json.dumps({"messages": [{"role": "user", "content": "hello"}]}) + "\n")
    check_holdout(clean, suite)
    leaked = tmp_path / "leaked.jsonl"
    instructions = suite.tasks[2].instructions
    leaked.write_text(
        json.dumps({"messages": [{"role": "user", "content": "  " + instructions.upper()}]})
        + "\n"
        + json.dumps({"id": "corporate/nda-review", "messages": []})
        + "\n"
    )
    with pytest.raises(InputError) as info:
        check_holdout(leaked, suite)
    assert "prompt of task 'employment/severance-calc' (leaked.jsonl:1)" in str(info.value)
    assert "task id 'corporate/nda-review' (leaked.jsonl:2)" in str(info.value)


def test_the_example_track_loads_and_its_suite_is_held_out() -> None:
    from pipeline.train import load_recipe
    from uptake.settings import load_settings

    settings = load_settings(EXAMPLE / "uptake.yaml")
    (track,) = settings.tracks
    assert track.suite == EXAMPLE.resolve()
    assert settings.agent.max_turns == 60 and settings.judge.configured
    suite = load_suite(track.suite)
    assert isinstance(suite, AgenticSuite)
    check_holdout(load_recipe(track.recipe).stages.sft.data, suite)


def test_the_worker_accepts_a_suite_folder(tmp_path: Path) -> None:
    from pipeline.worker.service import check_tracks
    from uptake.settings import load_settings

    settings = load_settings(EXAMPLE / "uptake.yaml")
    assert check_tracks(settings) == list(settings.tracks)
    missing = settings.tracks[0].model_copy(update={"suite": tmp_path / "nowhere"})
    from uptake.errors import ConfigError

    with pytest.raises(ConfigError, match="is not a file or folder"):
        check_tracks(settings.model_copy(update={"tracks": [missing]}))

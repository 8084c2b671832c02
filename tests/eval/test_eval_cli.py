"""``uptake eval``: the real console script and the in-process entry point."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.eval.helpers import LEGAL, REPO, task, write_suite
from uptake.cli import main

UPTAKE = REPO / ".venv" / "bin" / "uptake"


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    code = 0
    try:
        main(["eval", *args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.skipif(not UPTAKE.exists(), reason="console script not installed in .venv")
def test_console_script_json_is_one_object(tiny_model: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            str(UPTAKE),
            "eval",
            "--model",
            str(tiny_model),
            "--suite",
            str(LEGAL / "suite.jsonl"),
            "--json",
            "--max-new-tokens",
            "8",
            "--batch-size",
            "32",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1  # exactly one line of output
    data = json.loads(proc.stdout)
    assert data["n_tasks"] >= 120 and data["n_criteria"] > data["n_tasks"] * 3
    assert data["all_pass_rate"] == 0.0
    assert 0 < data["criterion_pass_rate"] < 1
    assert set(data["per_area"]) == {"contracts", "employment", "immigration", "landlord-tenant"}
    for area in data["per_area"].values():
        assert {"n_tasks", "all_pass_rate", "criterion_pass_rate", "ci"} <= set(area)
    ci = data["ci"]
    assert ci["confidence"] == 0.95
    assert ci["criterion_pass_rate"]["low"] <= data["criterion_pass_rate"]
    assert data["criterion_pass_rate"] <= ci["criterion_pass_rate"]["high"]


def small_suite(tmp_path: Path) -> Path:
    lines = (LEGAL / "suite.jsonl").read_text().splitlines()
    return write_suite(tmp_path / "small.jsonl", [lines[0], *lines[1:129:16]])


def test_out_dir_and_baseline_comparison(
    capsys, tmp_path: Path, tiny_model: Path, lively_model: Path
) -> None:
    suite = small_suite(tmp_path)
    code, out, err = run_main(
        capsys, "--model", str(tiny_model), "--suite", str(suite), "--out", str(tmp_path / "base"),
        "--max-new-tokens", "6", "--json",
    )  # fmt: skip
    assert code == 0, err
    base_files = {p.name for p in (tmp_path / "base").iterdir()}
    assert {
        "results.jsonl",
        "metrics.json",
        "report.md",
        "score_distribution.png",
        "per_area.png",
    } <= base_files
    assert json.loads((tmp_path / "base" / "metrics.json").read_text()) == json.loads(out)

    code, out, err = run_main(
        capsys, "--model", str(lively_model), "--suite", str(suite), "--max-new-tokens", "6",
        "--baseline", str(tmp_path / "base" / "results.jsonl"), "--json",
    )  # fmt: skip
    assert code == 0, err
    comparison = json.loads(out)["comparison"]
    assert comparison["baseline_model"] == str(tiny_model)
    assert comparison["candidate_model"] == str(lively_model)
    assert set(comparison["mcnemar"]) == {"candidate_only", "baseline_only", "p_value"}
    assert comparison["n_tasks"] == 8


def test_human_output_has_tables(capsys, tmp_path: Path, tiny_model: Path) -> None:
    code, out, err = run_main(
        capsys, "--model", str(tiny_model), "--suite", str(small_suite(tmp_path)),
        "--max-new-tokens", "4",
    )  # fmt: skip
    assert code == 0, err
    assert "all-pass rate" in out and "criterion pass rate" in out
    assert "per practice area" in out and "immigration" in out


def test_baseline_of_another_suite_is_refused(capsys, tmp_path: Path, tiny_model: Path) -> None:
    suite = small_suite(tmp_path)
    code, _, err = run_main(
        capsys, "--model", str(tiny_model), "--suite", str(suite), "--max-new-tokens", "2",
        "--out", str(tmp_path / "a"), "--json",
    )  # fmt: skip
    assert code == 0, err
    other = write_suite(tmp_path / "other.jsonl", [task("x")])
    code, out, err = run_main(
        capsys, "--model", str(tiny_model), "--suite", str(other),
        "--baseline", str(tmp_path / "a" / "results.jsonl"), "--json",
    )  # fmt: skip
    assert code == 2 and out == ""
    assert err.startswith("error: baseline") and "different suite" in err


def test_judge_suite_without_judge_exits_2(capsys, tmp_path: Path) -> None:
    judged = [{"id": "c1", "description": "Sound reasoning", "check": {"type": "judge"}}]
    suite = write_suite(tmp_path / "judged.jsonl", [task(criteria=judged)])
    code, out, err = run_main(
        capsys, "--model", str(tmp_path / "missing-model"), "--suite", str(suite),
        "--config", str(write_empty_config(tmp_path)),
    )  # fmt: skip
    assert code == 2 and out == ""
    assert "no judge is configured" in err and len(err.strip().splitlines()) == 1


def write_empty_config(tmp_path: Path) -> Path:
    path = tmp_path / "uptake.yaml"
    path.write_text("{}\n")
    return path


def test_overlapping_training_data_exits_2(capsys, tmp_path: Path, tiny_model: Path) -> None:
    suite = write_suite(tmp_path / "s.jsonl", [task("t1", prompt="Is the notice valid?")])
    train = tmp_path / "train.jsonl"
    train.write_text(
        json.dumps({"messages": [{"role": "user", "content": "is the notice VALID?"}]}) + "\n"
    )
    code, _, err = run_main(
        capsys, "--model", str(tiny_model), "--suite", str(suite), "--train-data", str(train),
    )  # fmt: skip
    assert code == 2 and "not held out" in err and "prompt of task 't1'" in err


def test_missing_model_exits_2(capsys, tmp_path: Path) -> None:
    code, _, err = run_main(
        capsys, "--model", str(tmp_path / "nope"), "--suite", str(small_suite(tmp_path))
    )
    assert code == 2 and "model directory not found" in err

"""Recipe validation: the example recipe, profiles, sha256, and one CLI test per failure kind."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.train import RecipeError, load_recipe
from tests.train.helpers import base_recipe, write_jsonl, write_recipe
from uptake.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "legal" / "recipe.yaml"


def test_example_recipe_loads_with_data_relative_to_the_file() -> None:
    recipe = load_recipe(EXAMPLE)
    assert recipe.name == "legal-memos"
    assert recipe.stages.sft.data == (EXAMPLE.parent / "train.jsonl").resolve()
    assert recipe.sha256 == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    assert recipe.lora is not None and recipe.lora.target_modules == "all-linear"
    assert recipe.stages.sft.assistant_only_loss


def test_profiles_merge_over_the_base_recipe() -> None:
    recipe = load_recipe(EXAMPLE)
    cpu, gpu = recipe.resolve("cpu"), recipe.resolve("gpu")
    assert cpu.profile == "cpu" and gpu.profile == "gpu"
    assert cpu.lora is None  # the CPU profile fine-tunes tiny models in full
    assert gpu.lora == recipe.lora
    assert cpu.stages.sft.max_steps == 160 and gpu.stages.sft.max_steps is None
    assert cpu.stages.sft.data == recipe.stages.sft.data
    assert cpu.sha256 == gpu.sha256 == recipe.sha256
    assert cpu.resolve("gpu") is cpu  # resolving twice keeps the first profile


def test_data_path_is_anchored_at_the_recipe_not_the_cwd(tmp_path, monkeypatch) -> None:
    path = write_recipe(tmp_path / "r")
    monkeypatch.chdir(tmp_path)
    assert load_recipe(path).stages.sft.data == tmp_path / "r" / "train.jsonl"


def test_sha_changes_with_the_file(tmp_path) -> None:
    path = write_recipe(tmp_path / "r")
    first = load_recipe(path).sha256
    path.write_text(path.read_text() + "# comment\n")
    assert load_recipe(path).sha256 != first


def test_flat_params_cover_every_hyperparameter() -> None:
    params = load_recipe(EXAMPLE).resolve("gpu").flat_params()
    assert params["recipe.stages.sft.learning_rate"] == "0.0002"
    assert params["recipe.lora.r"] == "16"
    assert params["recipe.profile"] == "gpu"


def _bad(tmp_path: Path, text: str | None = None, **over) -> Path:
    directory = tmp_path / "bad"
    path = write_recipe(directory, **over)
    if text is not None:
        path.write_text(text)
    return path


# kind -> (recipe writer, text the one-line error must contain)
FAILURES = {
    "missing file": (lambda p: p / "nope.yaml", "recipe file not found"),
    "yaml syntax": (lambda p: _bad(p, "name: x\nstages: [\n"), "YAML syntax error"),
    "not a mapping": (lambda p: _bad(p, "- a\n- b\n"), "top level must be a mapping"),
    "empty file": (lambda p: _bad(p, ""), "got empty file"),
    "unknown field": (
        lambda p: _bad(p, stages={"sft": {"learning_rat": 1e-3}}),
        "stages.sft.learning_rat: unknown field",
    ),
    "out of range": (
        lambda p: _bad(p, stages={"sft": {"learning_rate": -1}}),
        "stages.sft.learning_rate",
    ),
    "wrong type": (
        lambda p: _bad(p, stages={"sft": {"batch_size": "big"}}),
        "stages.sft.batch_size",
    ),
    "no stage": (lambda p: _bad(p, stages={"sft": None}), "needs at least one stage"),
    "missing data": (
        lambda p: _bad(p, stages={"sft": {"data": "gone.jsonl"}}),
        "stages.sft.data: Value error, data file not found",
    ),
    "bad lora": (lambda p: _bad(p, lora={"r": 0}), "lora.r"),
    "lora without targets": (
        lambda p: _bad(p, lora={"target_modules": []}),
        "lora.target_modules: Value should have at least 1 item",
    ),
    "bad enum": (lambda p: _bad(p, max_length_policy="truncate"), "max_length_policy"),
    "unknown profile": (lambda p: _bad(p, profiles={"tpu": {}}), "profiles.tpu"),
    "bad profile override": (
        lambda p: _bad(p, profiles={"cpu": {"stages": {"sft": {"epochs": 0}}}}),
        "profiles.cpu.stages.sft.epochs",
    ),
    "dpo without data": (
        lambda p: _bad(p, stages={"dpo": {"beta": 0.1}}),
        "stages.dpo.data: Field required",
    ),
}


@pytest.mark.parametrize("kind", sorted(FAILURES))
def test_bad_recipe_is_one_line_and_exit_2_via_cli(kind, tmp_path, capsys) -> None:
    make, expected = FAILURES[kind]
    path = make(tmp_path)
    with pytest.raises(RecipeError, match=None) as info:
        load_recipe(path)
    assert expected in str(info.value)
    model = tmp_path / "model"
    model.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--model", str(model), "--recipe", str(path), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert expected in err
    assert not (tmp_path / "o").exists()


def test_bad_recipe_exits_2_from_the_console_script(tmp_path) -> None:
    """The real entry point, in a fresh interpreter: one line on stderr, exit code 2."""
    path = _bad(tmp_path, stages={"sft": {"warmup_ratio": 2}})
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "uptake.cli",
            "train",
            "--model",
            str(tmp_path),
            "--recipe",
            str(path),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [lines[0]] and "stages.sft.warmup_ratio" in lines[0]


def test_bad_training_data_names_file_and_line(tmp_path, capsys) -> None:
    directory = tmp_path / "r"
    directory.mkdir()
    rows = [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}]
    write_jsonl(directory / "train.jsonl", rows)
    with (directory / "train.jsonl").open("a") as fh:
        fh.write(
            '{"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q2"}]}\n'
        )
    path = write_recipe(directory)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--model", str(model), "--recipe", str(path), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "train.jsonl:2: messages: Value error, needs at least one assistant message" in err


def test_base_recipe_helper_round_trips(tmp_path) -> None:
    path = write_recipe(tmp_path / "r", seed=3)
    assert yaml.safe_load(path.read_text())["seed"] == 3 == load_recipe(path).seed
    assert base_recipe(lora=None)["lora"] is None

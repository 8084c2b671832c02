"""An allow-listed model whose code is split over files (``configuration_x.py`` + ``modeling_x.py``
with a relative import, the usual Hub layout) trains, is saved with all its code, reloads from
anywhere, and is scored by ``uptake eval``; code files linked out of the folder never travel."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from pipeline.train import load_recipe, preflight, train
from pipeline.train.merge import export_model
from tests.eval.helpers import task, write_suite
from tests.eval.test_eval_cli import run_main as run_eval_cli
from tests.train.helpers import make_remote_code_model, write_recipe
from uptake.errors import InputError

CODE = {"configuration_tinyfoo.py", "modeling_tinyfoo.py"}
ALLOW = {"allowlist": ["acme/*"], "repo_id": "acme/tinyfoo"}


def test_split_code_model_full_finetunes_reloads_and_evaluates(
    model_copy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = make_remote_code_model(model_copy("llama"))
    recipe = load_recipe(
        write_recipe(tmp_path / "recipe", lora=None, stages={"sft": {"max_steps": 3}})
    )
    result = train(base, recipe, tmp_path / "run", profile="cpu", **ALLOW)
    assert result.preflight["trust_remote_code"] is True and result.steps == 3
    for saved in (tmp_path / "run" / "sft" / "final", result.model_dir):
        assert {p.name for p in saved.glob("*.py")} >= CODE, saved
        for name in CODE:
            assert (saved / name).read_bytes() == (base / name).read_bytes()

    moved = Path(shutil.copytree(result.model_dir, tmp_path / "elsewhere" / "model"))
    loaded = AutoModelForCausalLM.from_pretrained(moved, trust_remote_code=True)
    assert type(loaded).__name__ == "TinyFooForCausalLM"

    suite = write_suite(tmp_path / "suite.jsonl", [task("t1"), task("t2", prompt="Who?")])
    config = tmp_path / "uptake.yaml"
    config.write_text(
        yaml.safe_dump({"home": str(tmp_path / "home"), "trust_remote_code_allowlist": ["acme/*"]})
    )
    args = ["--model", str(moved), "--suite", str(suite), "--config", str(config)]
    code, out, err = run_eval_cli(capsys, *args, "--json", "--max-new-tokens", "4")
    assert code == 2 and "not in trust_remote_code_allowlist" in err  # a folder is no repo id
    code, out, err = run_eval_cli(
        capsys, *args, "--json", "--max-new-tokens", "4", "--repo-id", "acme/tinyfoo"
    )
    assert code == 0, err
    assert json.loads(out)["n_tasks"] == 2


def test_code_linked_out_of_the_model_folder_is_refused(model_copy, tmp_path: Path) -> None:
    base = make_remote_code_model(model_copy("llama"))
    outside = tmp_path / "outside" / "modeling_tinyfoo.py"
    outside.parent.mkdir()
    shutil.move(base / "modeling_tinyfoo.py", outside)
    (base / "modeling_tinyfoo.py").symlink_to(outside)
    recipe = load_recipe(write_recipe(tmp_path / "recipe"))
    report = preflight(base, recipe, **ALLOW)
    (refusal,) = report.refusals
    assert refusal.check == "trust_remote_code"
    assert "modeling_tinyfoo.py is a link to" in refusal.reason
    assert "outside the model directory" in refusal.reason


def test_export_ships_only_the_models_own_code(model_copy, tmp_path: Path) -> None:
    """Export copies the files the auto_map needs; a stray ``*.py`` link to a file outside the
    base (a secret, say) is not copied into the saved model, and a needed one is refused."""
    base = make_remote_code_model(model_copy("llama"))
    secret = tmp_path / "secrets.py"
    secret.write_text("HF_TOKEN = 'hf_not_for_export'\n", encoding="utf-8")
    (base / "settings_link.py").symlink_to(secret)
    tokenizer = AutoTokenizer.from_pretrained(base)
    common = {
        "base": None,
        "save_dtype": torch.float32,
        "tokenizer": tokenizer,
        "stop_token_ids": [],
        "provenance": {},
        "code_dir": base,
    }
    stage_output = Path(shutil.copytree(base, tmp_path / "stage", symlinks=False))
    for p in stage_output.glob("*.py"):
        p.unlink()  # a checkpoint as training leaves it: the code is not all there
    out = export_model(stage_output=stage_output, out_dir=tmp_path / "model", **common)
    assert {p.name for p in out.glob("*.py")} == CODE
    assert not any("hf_not_for_export" in p.read_text() for p in out.glob("*.py"))

    moved = tmp_path / "outside.py"
    shutil.move(base / "modeling_tinyfoo.py", moved)
    (base / "modeling_tinyfoo.py").symlink_to(moved)
    with pytest.raises(InputError, match=r"modeling_tinyfoo\.py is a link to"):
        export_model(stage_output=stage_output, out_dir=tmp_path / "model2", **common)
    assert not (tmp_path / "model2").exists()

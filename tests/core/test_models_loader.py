"""uptake.models: one safe loader, the remote-code decision from files, the shipped templates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import get_args

import pytest
from trl.chat_template_utils import has_generation_markers

from tests.train.helpers import REMOTE_MODELING, edit_json, make_remote_code_model
from uptake.errors import InputError
from uptake.models import (
    chat_template,
    chatml,
    chatml_training,
    check_model_dir,
    code_files,
    copy_code_files,
    decide_remote_code,
    load_model_and_tokenizer,
)
from uptake.models.chat_templates import TemplateName
from uptake.testing.tiny_models import TinyModelSpec, build_tiny_model

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Deadline?"},
    {"role": "assistant", "content": "Thirty days."},
    {"role": "user", "content": "Thanks"},
]
# A modeling file that imports a helper module, which imports the configuration: three files.
CHAINED_MODELING = REMOTE_MODELING.replace(
    "from .configuration_tinyfoo import TinyFooConfig\n",
    "from .configuration_tinyfoo import TinyFooConfig\nfrom .layers_tinyfoo import SCALE\n",
)
LAYERS = "from .configuration_tinyfoo import TinyFooConfig\n\nSCALE = 1.0\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "llama", TinyModelSpec())


@pytest.fixture
def remote(tiny: Path, tmp_path: Path) -> Path:
    """A model that loads only with its own code, split over two files (relative import)."""
    return make_remote_code_model(Path(shutil.copytree(tiny, tmp_path / "tinyfoo")))


def test_every_template_file_has_a_name_and_chatml_variants_render_alike(tiny: Path) -> None:
    from transformers import AutoTokenizer

    folder = Path(__file__).resolve().parents[2] / "uptake" / "models" / "templates"
    assert {p.stem for p in folder.glob("*.jinja")} == set(get_args(TemplateName))
    tok = AutoTokenizer.from_pretrained(tiny)
    for prompt in (False, True):
        messages = CONVERSATION[:-1] if not prompt else CONVERSATION
        plain, trained = (
            tok.apply_chat_template(
                messages, chat_template=t, tokenize=False, add_generation_prompt=prompt
            )
            for t in (chatml(), chatml_training())
        )
        assert plain == trained
    assert plain.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    assert plain.endswith("<|im_start|>user\nThanks<|im_end|>\n<|im_start|>assistant\n")
    assert has_generation_markers(chatml_training()) and not has_generation_markers(chatml())
    assert chat_template("chatml") == chatml()


def test_model_dir_checks_refuse_pickles_and_missing_files(tiny: Path, tmp_path: Path) -> None:
    assert check_model_dir(tiny).safetensors == ["model.safetensors"]
    with pytest.raises(InputError, match="model directory not found"):
        check_model_dir(tmp_path / "absent")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(tiny / "config.json", pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(InputError, match=r"only pickle weights \(pytorch_model.bin\)"):
        check_model_dir(pickled)
    sharded = Path(shutil.copytree(tiny, tmp_path / "sharded"))
    index = {"weight_map": {"a": "model-00002-of-00002.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(InputError, match="missing safetensors shards"):
        check_model_dir(sharded)


def test_remote_code_decision_from_files(tiny: Path, remote: Path, tmp_path: Path) -> None:
    assert decide_remote_code(tiny).action == "none"
    refused = decide_remote_code(remote, ["other/*"], "acme/tinyfoo")
    assert refused.refused and "'acme/tinyfoo' is not in trust_remote_code_allowlist" in (
        refused.reason
    )
    trusted = decide_remote_code(remote, ["acme/*"], "acme/tinyfoo")
    assert trusted.trust_remote_code
    assert trusted.code_files == ["configuration_tinyfoo.py", "modeling_tinyfoo.py"]
    native = Path(shutil.copytree(tiny, tmp_path / "native"))
    edit_json(native / "config.json", auto_map={"AutoModelForCausalLM": "modeling_x.XForCausalLM"})
    assert decide_remote_code(native, ["*"], "acme/x").action == "ignored"


def test_code_files_follow_relative_imports_and_copy_along(remote: Path, tmp_path: Path) -> None:
    (remote / "modeling_tinyfoo.py").write_text(CHAINED_MODELING, encoding="utf-8")
    (remote / "layers_tinyfoo.py").write_text(LAYERS, encoding="utf-8")
    (remote / "unrelated.py").write_text("raise SystemExit\n", encoding="utf-8")
    expected = ["configuration_tinyfoo.py", "layers_tinyfoo.py", "modeling_tinyfoo.py"]
    assert code_files(remote) == expected
    checkpoint = tmp_path / "checkpoint"
    assert copy_code_files(remote, checkpoint) == expected
    assert sorted(p.name for p in checkpoint.iterdir()) == expected
    for name in expected:
        assert (checkpoint / name).read_bytes() == (remote / name).read_bytes()


def test_code_file_linked_out_of_the_folder_is_refused(remote: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "modeling_tinyfoo.py"
    outside.parent.mkdir()
    shutil.move(remote / "modeling_tinyfoo.py", outside)
    (remote / "modeling_tinyfoo.py").symlink_to(outside)
    decision = decide_remote_code(remote, ["acme/*"], "acme/tinyfoo")
    assert decision.refused and "outside the model directory" in decision.reason
    with pytest.raises(InputError, match=r"is a link to .* outside the model directory"):
        copy_code_files(remote, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # a link that stays inside the folder is the folder's own file
    shutil.move(outside, remote / "real_modeling.py")
    (remote / "modeling_tinyfoo.py").unlink()
    (remote / "modeling_tinyfoo.py").symlink_to("real_modeling.py")
    assert decide_remote_code(remote, ["acme/*"], "acme/tinyfoo").trust_remote_code


def test_loader_runs_a_models_code_only_when_allowlisted(tiny: Path, tmp_path: Path) -> None:
    # transformers caches a local model's code by folder name: a name no other test loads
    remote = make_remote_code_model(Path(shutil.copytree(tiny, tmp_path / "tinyfoo-marker")))
    marker = tmp_path / "code-ran"
    modeling = remote / "modeling_tinyfoo.py"
    modeling.write_text(
        f"open({str(marker)!r}, 'w').write('x')\n" + modeling.read_text(), encoding="utf-8"
    )
    with pytest.raises(InputError, match=r"cannot load model .* trust_remote_code_allowlist"):
        load_model_and_tokenizer(remote, allowlist=["other/*"], repo_id="acme/tinyfoo")
    assert not marker.exists()
    loaded = load_model_and_tokenizer(
        remote, allowlist=["acme/*"], repo_id="acme/tinyfoo", device="cpu"
    )
    assert marker.exists()
    assert type(loaded.model).__name__ == "TinyFooForCausalLM"
    assert loaded.remote_code.trust_remote_code and not loaded.model.training
    assert str(loaded.device) == "cpu" and str(loaded.dtype) == "torch.float32"

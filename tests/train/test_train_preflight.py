"""Preflight: each refusal with its reason, each adapter exactly when the model needs it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, LlamaForCausalLM

from pipeline.train import PreflightError, load_recipe, preflight, train
from pipeline.train.preflight import end_of_turn_token, run_preflight
from tests.train.conftest import EXPECTED_ADAPTERS
from tests.train.helpers import edit_json, make_remote_code_model, write_recipe
from uptake.models import chatml_training

LLAMA2_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}"
)


@pytest.fixture
def recipe(tmp_path):
    return load_recipe(write_recipe(tmp_path / "recipe"))


@pytest.mark.parametrize("arch", sorted(EXPECTED_ADAPTERS))
def test_each_architecture_gets_exactly_the_adapters_it_needs(arch, tiny_models, recipe) -> None:
    report = preflight(tiny_models[arch], recipe)
    assert report.ok, report.refusals
    expected = EXPECTED_ADAPTERS[arch]
    assert sorted(report.adapter_names) == sorted(expected)
    for name, action in expected.items():
        assert report.adapter(name).action.startswith(action), report.adapter(name)
        assert report.adapter(name).reason
    assert report.eos_token == report.end_of_turn_token == "<|im_end|>"
    assert report.pad_token not in report.stop_tokens
    assert report.packing is False and report.attn_implementation == "sdpa"
    params = report.mlflow_params()
    assert params["preflight.adapters"] == ",".join(report.adapter_names)
    assert all(f"preflight.adapter.{n}" in params for n in expected)
    assert report.mlflow_tags()["uptake.preflight.ok"] == "true"


def test_adapted_tokenizer_masks_assistant_content_and_end_of_turn(tiny_models, recipe) -> None:
    prepared = run_preflight(tiny_models["gpt2"], recipe)
    tok = prepared.tokenizer
    assert tok.chat_template == chatml_training()
    messages = [{"role": "user", "content": "question"}, {"role": "assistant", "content": "answer"}]
    out = tok.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    masked = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tok.decode(masked) == "answer<|im_end|>"  # the model learns to answer and to stop
    assert masked[-1] == tok.eos_token_id


def test_remote_code_model_is_refused_with_its_reason(model_copy, recipe, tmp_path) -> None:
    model = make_remote_code_model(model_copy("llama"))
    report = preflight(model, recipe, allowlist=["someone-else/*"], repo_id="acme/tinyfoo")
    assert not report.ok
    (refusal,) = report.refusals
    assert refusal.check == "trust_remote_code"
    assert "config.json auto_map" in refusal.reason
    assert "modeling_tinyfoo.TinyFooForCausalLM" in refusal.reason
    assert "'acme/tinyfoo' is not in trust_remote_code_allowlist" in refusal.reason
    out = tmp_path / "run"
    with pytest.raises(PreflightError, match="trust_remote_code"):
        train(model, recipe, out, repo_id="acme/tinyfoo")
    assert not out.exists()  # a refused model leaves no run directory behind


def test_allowlisted_remote_code_model_passes(model_copy, recipe) -> None:
    model = make_remote_code_model(model_copy("llama"))
    report = preflight(model, recipe, allowlist=["acme/*"], repo_id="acme/tinyfoo")
    assert report.ok, report.refusals
    assert report.trust_remote_code
    assert report.architecture == "TinyFooForCausalLM"


def test_allowlist_matches_repo_ids_and_full_paths_not_folder_names(model_copy, recipe) -> None:
    model = make_remote_code_model(model_copy("llama"))  # a folder named "model-llama"
    assert not preflight(model, recipe, allowlist=["model-llama"]).ok
    assert not preflight(model, recipe, allowlist=["model-*"]).ok
    assert preflight(model, recipe, allowlist=[str(model.resolve())]).ok
    assert preflight(model, recipe, allowlist=[f"{model.parent.resolve()}/*"]).ok


def test_custom_code_for_a_native_architecture_is_ignored(model_copy, recipe) -> None:
    model = model_copy("llama")
    edit_json(model / "config.json", auto_map={"AutoModelForCausalLM": "modeling_x.XForCausalLM"})
    report = preflight(model, recipe)
    assert report.ok and not report.trust_remote_code
    assert report.adapter("remote_code").action == "ignored"
    assert report.architecture == "LlamaForCausalLM"


def test_bin_only_weights_are_refused(model_copy, recipe) -> None:
    model = model_copy("llama")
    state = load_file(model / "model.safetensors")
    torch.save(state, model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    report = preflight(model, recipe)
    (refusal,) = report.refusals
    assert refusal.check == "weights_format"
    assert "pytorch_model.bin" in refusal.reason and "safetensors only" in refusal.reason


def test_pickle_files_next_to_safetensors_are_ignored(model_copy, recipe) -> None:
    model = model_copy("llama")
    torch.save({}, model / "pytorch_model.bin")
    report = preflight(model, recipe)
    assert report.ok
    assert any("ignoring pickle weight files" in n for n in report.notes)


def test_missing_shard_is_refused(model_copy, recipe) -> None:
    model = model_copy("llama")
    index = {
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
        }
    }
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    report = preflight(model, recipe)
    assert [r.check for r in report.refusals] == ["weights_format"]
    assert "missing safetensors shards" in report.refusals[0].reason


def test_short_context_is_refused_or_clamped(model_copy, tmp_path) -> None:
    model = model_copy("llama")
    edit_json(model / "config.json", max_position_embeddings=128)
    strict = load_recipe(write_recipe(tmp_path / "a"))
    report = preflight(model, strict)
    assert [r.check for r in report.refusals] == ["context_length"]
    assert "128 tokens, shorter than the recipe's max_length 256" in report.refusals[0].reason
    clamp = load_recipe(write_recipe(tmp_path / "b", max_length_policy="clamp"))
    report = preflight(model, clamp)
    assert report.ok and report.max_length == 128
    assert report.adapter("max_length").action == "256 -> 128"


def test_unknown_template_without_markers_gets_chatml_fallback(model_copy, recipe) -> None:
    model = model_copy("llama")
    (model / "chat_template.jinja").write_text(LLAMA2_TEMPLATE)
    prepared = run_preflight(model, recipe)
    adapter = prepared.report.adapter("chat_template")
    assert adapter.action == "fallback_chatml" and "not a template TRL can patch" in adapter.reason
    assert prepared.tokenizer.chat_template == chatml_training()


def test_markers_that_leave_out_the_end_of_turn_are_replaced(model_copy, recipe) -> None:
    model = model_copy("llama")
    leaky = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
        "{% generation %}{{ m['content'] }}{% endgeneration %}{{ '<|im_end|>\n' }}"
        "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    (model / "chat_template.jinja").write_text(leaky)
    report = preflight(model, recipe)
    adapter = report.adapter("chat_template")
    assert "leaves out the end-of-turn token" in adapter.reason
    assert adapter.action == "added_generation_markers"  # it renders exactly like ChatML


def test_missing_pad_token_gets_one_distinct_from_stops(model_copy, recipe) -> None:
    model = model_copy("llama")
    edit_json(model / "tokenizer_config.json", pad_token=None)
    report = preflight(model, recipe)
    assert report.adapter("pad_token").reason == "tokenizer has no pad token"
    assert report.pad_token == "<|pad|>"


def test_gradient_checkpointing_disabled_when_unsupported(
    tiny_models, tmp_path, monkeypatch
) -> None:
    recipe = load_recipe(write_recipe(tmp_path / "r", hardware={"gradient_checkpointing": True}))
    assert preflight(tiny_models["llama"], recipe).gradient_checkpointing is True
    monkeypatch.setattr(LlamaForCausalLM, "supports_gradient_checkpointing", False)
    report = preflight(tiny_models["llama"], recipe)
    assert report.gradient_checkpointing is False
    assert (
        "does not support gradient checkpointing" in report.adapter("gradient_checkpointing").reason
    )


def test_packing_needs_a_padding_free_kernel(tiny_models, tmp_path) -> None:
    forced = load_recipe(write_recipe(tmp_path / "a", stages={"sft": {"packing": True}}))
    report = preflight(tiny_models["llama"], forced)
    assert report.packing is False
    assert "no padding-free (varlen) kernel" in report.adapter("packing").reason
    auto = load_recipe(write_recipe(tmp_path / "b"))
    assert preflight(tiny_models["llama"], auto).adapter("packing") is None


def test_not_a_model_directory_is_input_error(tmp_path, recipe) -> None:
    from uptake.errors import InputError

    with pytest.raises(InputError, match=r"no config\.json"):
        preflight(tmp_path, recipe)


def test_unknown_architecture_is_refused(model_copy, recipe) -> None:
    model = model_copy("llama")
    edit_json(model / "config.json", model_type="brand-new-arch")
    report = preflight(model, recipe)
    assert [r.check for r in report.refusals] == ["architecture"]


def test_end_of_turn_detection_reads_the_template(tiny_models) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    assert end_of_turn_token(tok) == "<|im_end|>"
    tok.chat_template = LLAMA2_TEMPLATE
    assert end_of_turn_token(tok) == tok.eos_token

"""Real TRL training of tiny models on CPU: three architectures, DPO, progress, output format."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from pipeline.train import TrainProgress, load_recipe, preflight, train
from pipeline.train.merge import PROVENANCE_FILE
from tests.train.conftest import EXPECTED_ADAPTERS
from tests.train.helpers import (
    corpus,
    make_remote_code_model,
    memo_rows,
    preference_rows,
    write_jsonl,
    write_recipe,
)
from uptake.errors import InputError
from uptake.models import chatml_training
from uptake.testing.tiny_models import TinyModelSpec, build_tiny_model

PROMPT = [{"role": "user", "content": "Write a memo on a tax matter for Ana."}]


def _generate(model_dir, max_new_tokens=24):
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    enc = tok.apply_chat_template(
        PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return tok, model, out[0, enc["input_ids"].shape[1] :]


@pytest.mark.parametrize("arch", sorted(EXPECTED_ADAPTERS))
def test_same_recipe_trains_each_architecture(arch, tiny_models, tmp_path) -> None:
    recipe = load_recipe(write_recipe(tmp_path / "recipe"))
    events: list[TrainProgress] = []
    reports = []
    result = train(
        tiny_models[arch],
        recipe,
        tmp_path / "run",
        profile="cpu",
        on_progress=events.append,
        on_preflight=reports.append,
    )
    # Trained: every step ran, the loss fell, and progress reached the caller at every step.
    assert result.steps == 24 and result.stages[0].session_steps == 24
    assert result.tokens > 24 * 8 * 10 and result.tokens_per_s > 0
    losses = [loss for _, loss in result.stages[0].losses]
    assert len(losses) == 24 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
    assert result.final_loss == losses[-1]
    assert [e.step for e in events] == list(range(0, 25))
    assert {e.total_steps for e in events} == {24} and {e.stage for e in events} == {"sft"}
    assert events[-1].loss == losses[-1] and events[-1].tokens == result.tokens
    assert all(e.tokens_per_s > 0 for e in events[1:])

    # Preflight listed exactly the adapters this architecture needed.
    (report,) = reports
    assert sorted(report.adapter_names) == sorted(EXPECTED_ADAPTERS[arch])
    assert result.preflight["adapters"] == [a.model_dump() for a in report.adapters]

    # Output: merged, self-contained, safetensors, adapted tokenizer, loads and generates.
    model_dir = result.model_dir
    assert model_dir == tmp_path / "run" / "model"
    names = {p.name for p in model_dir.iterdir()}
    assert "model.safetensors" in names and "adapter_config.json" not in names
    assert not any(n.endswith((".bin", ".pt")) for n in names)
    weights = load_file(model_dir / "model.safetensors")
    assert not any("lora" in k for k in weights)
    base = load_file(tiny_models[arch] / "model.safetensors")
    changed = [k for k in base if k in weights and not torch.equal(base[k], weights[k])]
    assert changed, "merged weights equal the base: the LoRA delta was not merged"
    tok, model, new_tokens = _generate(model_dir)
    assert tok.chat_template == chatml_training() or "{% generation %}" in tok.chat_template
    assert (
        tok.eos_token == "<|im_end|>"
        and tok.pad_token_id not in model.generation_config.eos_token_id
    )
    assert tok.convert_tokens_to_ids("<|im_end|>") in model.generation_config.eos_token_id
    assert len(new_tokens) > 0
    provenance = json.loads((model_dir / PROVENANCE_FILE).read_text())
    assert provenance["recipe_sha256"] == recipe.sha256
    assert provenance["preflight_adapters"] == report.adapter_names

    # Preflight is idempotent: the output model needs no adapter any more.
    assert preflight(model_dir, recipe).adapter_names == []


@pytest.mark.parametrize("tied", [True, False], ids=["tied-head", "own-head"])
def test_lora_trains_the_tokens_preflight_added(tied: bool, tmp_path) -> None:
    """A base with no pad, no ChatML tokens and no template: preflight adds three tokens and
    resizes the embeddings, and LoRA trains their rows (whole tied embedding, or rows only)."""
    spec = TinyModelSpec(
        arch="llama", chat_template="none", pad_equals_eos=True, bare_vocab=True,
        tie_embeddings=tied,
    )  # fmt: skip
    base_dir = build_tiny_model(tmp_path / "base", spec, corpus=corpus(memo_rows(200)))
    recipe = load_recipe(write_recipe(tmp_path / "recipe"))
    reports = []
    result = train(base_dir, recipe, tmp_path / "run", profile="cpu", on_preflight=reports.append)

    (report,) = reports
    assert report.added_tokens == ["<|im_start|>", "<|im_end|>", "<|uptake_pad|>"]
    actions = [a["action"] for a in result.preflight["adapters"]]  # final: after the resize
    assert any(a.endswith("; embeddings resized 419 -> 422") for a in actions)
    assert any("'<|uptake_pad|>' (added)" in a for a in actions)
    losses = [loss for _, loss in result.stages[0].losses]
    assert result.steps == 24 and losses[-1] < losses[0]

    base = AutoModelForCausalLM.from_pretrained(base_dir).get_input_embeddings().weight
    tok, model, new_tokens = _generate(result.model_dir)
    embed = model.get_input_embeddings().weight
    assert embed.shape[0] == len(tok) == 422 and len(new_tokens) > 0
    head_is_embed = model.get_output_embeddings().weight.data_ptr() == embed.data_ptr()
    assert head_is_embed == tied
    # New rows start at the old rows' mean (tiny spread): trained, they moved well away.
    end_of_turn = tok.convert_tokens_to_ids("<|im_end|>")
    assert float((embed[end_of_turn] - base.mean(0)).norm()) > 0.1
    old_rows_equal = torch.equal(embed[:419], base)
    assert old_rows_equal != tied  # rows only: the old ones are untouched


def test_full_finetune_learns_the_template(tiny_models, tmp_path) -> None:
    """``lora: null`` trains every weight; 60 steps are enough to learn one memo template."""
    recipe = load_recipe(
        write_recipe(
            tmp_path / "recipe",
            lora=None,
            stages={"sft": {"max_steps": 60, "batch_size": 16, "learning_rate": 3e-3}},
        )
    )
    result = train(tiny_models["llama"], recipe, tmp_path / "run", profile="cpu")
    assert result.final_loss < 0.5
    tok, _, new_tokens = _generate(result.model_dir, max_new_tokens=60)
    text = tok.decode(new_tokens, skip_special_tokens=False)
    assert "Rule: IRC 6501. Deadline: 3 years." in text
    assert new_tokens[-1].item() == tok.eos_token_id, text  # it learned to stop


def test_dpo_stage_follows_sft(tiny_models, tmp_path) -> None:
    directory = tmp_path / "recipe"
    directory.mkdir()
    write_jsonl(directory / "prefs.jsonl", preference_rows())
    recipe = load_recipe(
        write_recipe(
            directory,
            stages={
                "sft": {"max_steps": 8},
                "dpo": {
                    "data": "prefs.jsonl",
                    "max_steps": 4,
                    "batch_size": 4,
                    "learning_rate": 1e-3,
                    "beta": 0.1,
                },
            },
        )
    )
    events: list[TrainProgress] = []
    result = train(
        tiny_models["qwen2"], recipe, tmp_path / "run", profile="cpu", on_progress=events.append
    )
    assert [s.name for s in result.stages] == ["sft", "dpo"]
    assert [s.steps for s in result.stages] == [8, 4] and result.steps == 12
    assert {e.stage for e in events} == {"sft", "dpo"}
    assert (tmp_path / "run" / "sft" / "merged" / "model.safetensors").is_file()
    assert result.data_sha256.keys() == {"sft", "dpo"}
    dpo_out = load_file(result.model_dir / "model.safetensors")
    sft_out = load_file(tmp_path / "run" / "sft" / "merged" / "model.safetensors")
    assert any(not torch.equal(sft_out[k], dpo_out[k]) for k in sft_out)
    _generate(result.model_dir)


def test_allowlisted_remote_code_model_trains_and_ships_its_code(model_copy, tmp_path) -> None:
    model = make_remote_code_model(model_copy("llama"))
    directory = tmp_path / "recipe"
    directory.mkdir()
    write_jsonl(directory / "prefs.jsonl", preference_rows())
    dpo = {"data": "prefs.jsonl", "max_steps": 2, "batch_size": 4}
    recipe = load_recipe(write_recipe(directory, stages={"sft": {"max_steps": 4}, "dpo": dpo}))
    result = train(
        model, recipe, tmp_path / "run", profile="cpu", allowlist=["acme/*"], repo_id="acme/tinyfoo"
    )
    assert result.preflight["trust_remote_code"] is True
    assert [s.name for s in result.stages] == ["sft", "dpo"]  # DPO reloads the SFT output's code
    assert (result.model_dir / "modeling_tinyfoo.py").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(result.model_dir, trust_remote_code=True)
    assert type(loaded).__name__ == "TinyFooForCausalLM"


def test_progress_hook_failure_does_not_stop_training(tiny_models, tmp_path) -> None:
    recipe = load_recipe(write_recipe(tmp_path / "recipe", stages={"sft": {"max_steps": 3}}))

    def broken(_: TrainProgress) -> None:
        raise ConnectionError("broker down")

    assert (
        train(
            tiny_models["llama"], recipe, tmp_path / "run", profile="cpu", on_progress=broken
        ).steps
        == 3
    )


def test_run_directory_rules(tiny_models, tmp_path) -> None:
    recipe_path = write_recipe(tmp_path / "recipe", stages={"sft": {"max_steps": 2}})
    recipe = load_recipe(recipe_path)
    out = tmp_path / "run"
    first = train(tiny_models["llama"], recipe, out, profile="cpu")
    with pytest.raises(InputError, match="already holds a training run"):
        train(tiny_models["llama"], recipe, out, profile="cpu")
    # Retrying a finished run returns its result without training again.
    again = train(tiny_models["llama"], recipe, out, profile="cpu", resume=True)
    assert again == first
    # The run directory belongs to one recipe and one base model.
    recipe_path.write_text(recipe_path.read_text().replace("seed: 7", "seed: 8"))
    with pytest.raises(InputError, match="different recipe"):
        train(tiny_models["llama"], load_recipe(recipe_path), out, profile="cpu", resume=True)
    with pytest.raises(InputError, match="different base model"):
        train(tiny_models["qwen2"], recipe, out, profile="cpu", resume=True)
    data = tmp_path / "recipe" / "train.jsonl"
    data.write_text(data.read_text() + data.read_text().splitlines()[0] + "\n")
    with pytest.raises(InputError, match="different data"):
        train(tiny_models["llama"], recipe, out, profile="cpu", resume=True)
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "file").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        train(tiny_models["llama"], recipe, stray, profile="cpu")

"""Build tiny, randomly initialised causal LMs with a freshly trained tokenizer.

Nothing can be downloaded from the Hub on CI or in air-gapped clusters, yet tests, benchmarks
and ``uptake demo`` need real transformers checkpoints. This module writes one to a directory:
a config with random weights (safetensors) and a byte-level BPE tokenizer trained on a corpus.
The knobs reproduce the ways real new releases differ (no chat template, pad == EOS, a template
without ``{% generation %}`` markers) so the pipeline's preflight can be exercised.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from uptake.models.chat_templates import CHATML_TOKENS, chatml, chatml_training

if TYPE_CHECKING:  # heavy imports, done lazily at run time
    import torch
    from transformers import PretrainedConfig, PreTrainedTokenizerFast

Arch = Literal["llama", "qwen2", "gpt2"]
# ChatML with generation markers (for assistant-only loss), plain ChatML, or no template.
TemplateKind = Literal["generation", "plain", "none"]

SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>", *CHATML_TOKENS]

DEFAULT_CORPUS = (
    "The client asks whether the filing deadline has passed.",
    "Under the statute the notice must be served within thirty days.",
    "We recommend that the client files the petition before the deadline.",
    "This memo summarises the governing provision and the required steps.",
    "The employer must give written notice; the court will not guarantee an outcome.",
)


class TinyModelSpec(BaseModel):
    """What to build. Defaults give a ~0.4M-parameter Llama that trains in seconds on a CPU."""

    arch: Arch = "llama"
    hidden_size: int = Field(128, ge=16)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(256, ge=16)
    vocab_size: int = Field(600, ge=300)
    max_position_embeddings: int = Field(1024, ge=64)
    chat_template: TemplateKind = "generation"
    pad_equals_eos: bool = False
    seed: int = 0
    tie_embeddings: bool = True
    bare_vocab: bool = False
    """Only ``<|endoftext|>`` is special: no pad or ChatML tokens, so preflight must add them
    and resize the embeddings (needs ``pad_equals_eos`` and ``chat_template="none"``)."""
    weight_scale: float = Field(1.0, gt=0)
    """Multiplies every weight but embeddings and norms. At the default init a random model
    repeats the prompt's last token, so every output is alike; 5.0 makes outputs depend on
    the prompt, which tests and benchmarks comparing outputs need."""


def train_tokenizer(
    corpus: Iterable[str], vocab_size: int, special_tokens: list[str] | None = None
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer; byte-level means no input is ever unknown."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS if special_tokens is None else special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def _config(spec: TinyModelSpec, vocab: int, bos: int, eos: int, pad: int) -> PretrainedConfig:
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    if spec.arch == "gpt2":
        return GPT2Config(
            n_embd=spec.hidden_size,
            n_layer=spec.num_layers,
            n_head=spec.num_heads,
            n_inner=spec.intermediate_size,
            n_positions=spec.max_position_embeddings,
            tie_word_embeddings=spec.tie_embeddings,
            vocab_size=vocab,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=pad,
        )
    cls = LlamaConfig if spec.arch == "llama" else Qwen2Config
    return cls(
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_embeddings,
        vocab_size=vocab,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
    )


def _scale_weights(model: torch.nn.Module, factor: float) -> None:
    """Scale every parameter except those of embeddings and norm layers (any architecture)."""
    import torch

    kept = {  # embedding tables, also when tied to the output head
        id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()
    }
    with torch.no_grad():
        for module in model.modules():
            if "Norm" in type(module).__name__:
                continue
            for param in module.parameters(recurse=False):
                if id(param) not in kept:
                    param.mul_(factor)


def build_tiny_model(
    out_dir: str | Path,
    spec: TinyModelSpec | None = None,
    corpus: Iterable[str] | None = None,
) -> Path:
    """Write random weights (safetensors) and a trained tokenizer to ``out_dir``; return it."""
    import torch
    from transformers import AutoModelForCausalLM

    spec = spec or TinyModelSpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = list(corpus) if corpus is not None else list(DEFAULT_CORPUS)
    if spec.bare_vocab and not (spec.pad_equals_eos and spec.chat_template == "none"):
        raise ValueError("bare_vocab needs pad_equals_eos and no chat template")
    special = SPECIAL_TOKENS[:1] if spec.bare_vocab else SPECIAL_TOKENS
    tokenizer = train_tokenizer(texts, spec.vocab_size, special)
    if not spec.bare_vocab:
        tokenizer.add_special_tokens({"additional_special_tokens": list(CHATML_TOKENS)})
    if spec.pad_equals_eos:
        tokenizer.pad_token = tokenizer.eos_token
    else:
        tokenizer.pad_token = "<|pad|>"
    tokenizer.bos_token = "<|endoftext|>"
    templates = {"generation": chatml_training(), "plain": chatml(), "none": None}
    tokenizer.chat_template = templates[spec.chat_template]

    config = _config(
        spec,
        vocab=len(tokenizer),
        bos=tokenizer.bos_token_id,
        eos=tokenizer.eos_token_id,
        pad=tokenizer.pad_token_id,
    )
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config)
    if spec.weight_scale != 1.0:
        _scale_weights(model, spec.weight_scale)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out

"""Preflight: inspect a new base model, refuse what is unsafe, adapt what naive recipes trip on.

New releases break recipes in known ways. Each check below either refuses the model (with the
reason a person needs) or records an *adapter*, a small, logged change that makes the one recipe
work unchanged:

- remote code: a model whose config maps to custom Python runs that code at load time. It is
  refused unless its repo is allow-listed; custom code for an architecture transformers knows
  natively is ignored (the native class is loaded instead).
- weights: safetensors only. Pickle checkpoints (``.bin``/``.pt``) execute code when loaded.
- context: a model whose context is shorter than the recipe's ``max_length`` is refused, or the
  length is clamped when the recipe says ``max_length_policy: clamp``.
- chat template: assistant-only loss needs ``{% generation %}`` markers. A template without them is
  patched (TRL's training version of a known template, or markers added to a ChatML one), and a
  tokenizer with no template, or an unknown one, gets a ChatML fallback. The saved model carries
  the template it was trained with, so evaluation and serving prompt it the same way.
- EOS: generation stops at EOS, so EOS must be the token that ends an assistant turn in the
  template; otherwise the model rambles past its answer.
- pad: a pad token equal to a stop token makes padding-masking code mask the stop token too, so
  the model never learns to stop. A distinct pad is used (added, with embeddings resized).
- gradient checkpointing: disabled for architectures that do not support it.
- attention / packing: packing needs a padding-free (varlen) attention kernel; without one it is
  turned off (dense block masks measured 2-3x slower than padded batches).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import logging
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from pipeline.train.hardware import ResolvedHardware, resolve_hardware
from pipeline.train.recipe import Recipe
from uptake.errors import InputError

log = logging.getLogger(__name__)
MLFLOW_TAG_MAX = 5000  # MLflow's limit on a tag value

# ChatML with generation markers around the assistant content and its end-of-turn token, so
# assistant-only loss also trains the model to stop.
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\n' }}{% generation %}{{- message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{- '\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
PAD_CANDIDATES = (
    "<|pad|>",
    "<pad>",
    "[PAD]",
    "<|finetune_right_pad_id|>",
    "<|finetune_right_pad|>",
)
NEW_PAD_TOKEN = "<|uptake_pad|>"
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl"}
CONTEXT_ATTRS = (
    "max_position_embeddings",
    "n_positions",
    "max_sequence_length",
    "seq_length",
    "n_ctx",
    "max_seq_len",
)
FLASH_ATTENTION = {"flash_attention_2", "flash_attention_3"}
_PROBE = [
    {"role": "user", "content": "first question"},
    {"role": "assistant", "content": "first answer"},
    {"role": "user", "content": "second question"},
    {"role": "assistant", "content": "second answer"},
]
_SENTINEL = "UPTAKE-SENTINEL-7f3a"


class PreflightError(InputError):
    """The model was refused; the message lists every reason."""


class Adapter(BaseModel):
    """One change preflight made so the recipe works on this model."""

    name: str
    action: str
    reason: str


class Refusal(BaseModel):
    check: str
    reason: str


class PreflightReport(BaseModel):
    """What preflight found and did. Printed by the CLI, logged to MLflow as params and tags."""

    model_dir: str
    repo_id: str | None = None
    model_type: str | None = None
    architecture: str | None = None
    num_parameters: int | None = None
    context_length: int | None = None
    max_length: int
    trust_remote_code: bool = False
    attn_implementation: str | None = None
    packing: bool = False
    gradient_checkpointing: bool = False
    eos_token: str | None = None
    end_of_turn_token: str | None = None
    pad_token: str | None = None
    stop_tokens: list[str] = Field(default_factory=list)
    added_tokens: list[str] = Field(default_factory=list)
    adapters: list[Adapter] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    refusals: list[Refusal] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refusals

    @property
    def adapter_names(self) -> list[str]:
        return [a.name for a in self.adapters]

    def adapter(self, name: str) -> Adapter | None:
        return next((a for a in self.adapters if a.name == name), None)

    def raise_if_refused(self) -> None:
        if self.refusals:
            reasons = "; ".join(f"{r.check}: {r.reason}" for r in self.refusals)
            raise PreflightError(f"preflight refused {self.model_dir}: {reasons}")

    def mlflow_params(self) -> dict[str, str]:
        """Flat params: one per adapter plus the decisions every run has."""
        params = {
            "preflight.adapters": ",".join(self.adapter_names) or "none",
            "preflight.max_length": str(self.max_length),
            "preflight.attn_implementation": str(self.attn_implementation),
            "preflight.packing": str(self.packing),
            "preflight.gradient_checkpointing": str(self.gradient_checkpointing),
            "preflight.trust_remote_code": str(self.trust_remote_code),
            "preflight.eos_token": str(self.eos_token),
            "preflight.pad_token": str(self.pad_token),
        }
        for a in self.adapters:
            params[f"preflight.adapter.{a.name}"] = a.action[:500]
        return params

    def mlflow_tags(self) -> dict[str, str]:
        """Tags: what was adapted, whether it passed, and why not (refusals), plus the notes
        (packing, checkpointing, ... decisions) so they are searchable, not only in artifacts."""
        tags = {
            "uptake.preflight.adapters": ",".join(self.adapter_names) or "none",
            "uptake.preflight.ok": str(self.ok).lower(),
        }
        if self.refusals:
            reasons = "; ".join(f"{r.check}: {r.reason}" for r in self.refusals)
            tags["uptake.preflight.refusals"] = reasons[:MLFLOW_TAG_MAX]
        if self.notes:
            tags["uptake.preflight.notes"] = "; ".join(self.notes)[:MLFLOW_TAG_MAX]
        return tags

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        out = [
            f"model       {self.model_dir} ({self.architecture or self.model_type or '?'}, "
            f"{_human(self.num_parameters)} params, context {self.context_length or '?'})",
            f"training    max_length {self.max_length}, attention {self.attn_implementation}, "
            f"packing {'on' if self.packing else 'off'}, gradient checkpointing "
            f"{'on' if self.gradient_checkpointing else 'off'}",
            f"tokens      eos {self.eos_token!r}, end of turn {self.end_of_turn_token!r}, "
            f"pad {self.pad_token!r}",
        ]
        out += [f"adapter     {a.name}: {a.action} — {a.reason}" for a in self.adapters]
        out += [f"note        {n}" for n in self.notes]
        out += [f"REFUSED     {r.check}: {r.reason}" for r in self.refusals]
        return out


def _human(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


@dataclass
class Prepared:
    """Preflight's working result: the report plus the adapted tokenizer and config."""

    report: PreflightReport
    hardware: ResolvedHardware
    tokenizer: Any = None
    config: Any = None
    model_class: Any = None
    stop_token_ids: list[int] = field(default_factory=list)


# ---------------------------------------------------------------- file-level checks (no code run)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def custom_code_findings(model_dir: Path) -> list[str]:
    """Where the model asks for its own Python code (``auto_map`` entries)."""
    findings = []
    for name in ("config.json", "tokenizer_config.json", "processor_config.json"):
        auto_map = _read_json(model_dir / name).get("auto_map")
        if auto_map:
            entries = auto_map.items() if isinstance(auto_map, dict) else [("", auto_map)]
            shown = ", ".join(f"{k} -> {v}" for k, v in entries)
            findings.append(f"{name} auto_map ({shown})")
    return findings


def is_allowlisted(allowlist: Iterable[str], repo_id: str | None, model_dir: Path) -> bool:
    """Allow-list entries are repo ids or absolute paths, shell-style patterns allowed
    (``org/*``). A directory's bare name is not matched: any folder could be named like an
    allow-listed repo, and trusting it would run whatever code it holds."""
    candidates = [c for c in (repo_id, str(model_dir.resolve())) if c]
    return any(fnmatch.fnmatchcase(c, pattern) for pattern in allowlist for c in candidates)


def _safetensors_params(files: list[Path]) -> int | None:
    """Parameter count from safetensors headers, without loading any tensor."""
    total = 0
    try:
        for path in files:
            with path.open("rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(size))
            for key, meta in header.items():
                if key == "__metadata__":
                    continue
                n = 1
                for dim in meta["shape"]:
                    n *= dim
                total += n
    except (OSError, ValueError, KeyError, struct.error):
        return None
    return total


def _check_weights(model_dir: Path, report: PreflightReport) -> None:
    files = sorted(p for p in model_dir.iterdir() if p.is_file())
    safetensors = [p for p in files if p.suffix == ".safetensors"]
    pickles = [p.name for p in files if p.suffix in PICKLE_SUFFIXES]
    if not safetensors:
        found = ", ".join(pickles) or "no weight files"
        report.refusals.append(
            Refusal(
                check="weights_format",
                reason=f"no safetensors weights (found: {found}); uptake loads safetensors only, "
                "because pickle-based .bin/.pt checkpoints can run arbitrary code when loaded",
            )
        )
        return
    index = _read_json(model_dir / "model.safetensors.index.json")
    missing = sorted(
        {s for s in index.get("weight_map", {}).values() if not (model_dir / s).is_file()}
    )
    if missing:
        report.refusals.append(
            Refusal(check="weights_format", reason=f"missing safetensors shards: {missing}")
        )
        return
    if pickles:
        report.notes.append(f"ignoring pickle weight files {pickles}; loading safetensors only")
    report.num_parameters = _safetensors_params(safetensors)


# ---------------------------------------------------------------- config / class


def context_length(config: Any) -> int | None:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attr in CONTEXT_ATTRS:
        value = getattr(text, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def causal_lm_class(config: Any, model_dir: Path, trust_remote_code: bool) -> Any:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    if trust_remote_code and "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {}):
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        return get_class_from_dynamic_module(
            config.auto_map["AutoModelForCausalLM"], str(model_dir), local_files_only=True
        )
    return MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]


def _native_model_type(model_dir: Path) -> bool:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return _read_json(model_dir / "config.json").get("model_type") in CONFIG_MAPPING


# ---------------------------------------------------------------- chat template


def _render(tok: Any, template: str | None, messages: list[dict], gen_prompt: bool) -> str | None:
    try:
        out = tok.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=gen_prompt
        )
    except Exception:  # templates raise on anything they do not like (roles, missing keys)
        return None
    return out if isinstance(out, str) else None


def _renders_like_chatml(tok: Any, template: str) -> bool:
    for gen in (False, True):
        mine = _render(tok, template, _PROBE[:3] if gen else _PROBE, gen)
        theirs = _render(tok, CHATML_TEMPLATE, _PROBE[:3] if gen else _PROBE, gen)
        if mine is None or mine != theirs:
            return False
    return True


def _stop_token_trained(tok: Any, template: str) -> bool:
    from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

    if not has_generation_markers(template):
        return False
    try:
        return is_chat_template_stop_token_trained(tok, chat_template=template)
    except Exception:
        return False


def _ensure_tokens(tok: Any, tokens: Iterable[str], report: PreflightReport) -> None:
    from transformers import AddedToken

    vocab = tok.get_vocab()
    new = [t for t in tokens if t not in vocab]
    if new:
        tok.add_tokens(
            [AddedToken(t, special=True, normalized=False) for t in new], special_tokens=True
        )
        report.added_tokens.extend(new)


def _adapt_chat_template(tok: Any, report: PreflightReport, assistant_only_loss: bool) -> None:
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = tok.chat_template
    if isinstance(template, dict):
        template = template.get("default")
    if not template:
        _ensure_tokens(tok, CHATML_TOKENS, report)
        tok.chat_template = CHATML_TEMPLATE
        report.adapters.append(
            Adapter(
                name="chat_template",
                action="fallback_chatml",
                reason="tokenizer has no chat template; installed ChatML with {% generation %} "
                "markers (saved with the model, so eval and serving use it too)",
            )
        )
        return
    if _stop_token_trained(tok, template):
        return  # markers present and the end-of-turn token is inside them
    if not assistant_only_loss and _render(tok, template, _PROBE, False) is not None:
        report.notes.append("chat template has no usable {% generation %} markers (not needed)")
        return
    why = (
        "template lacks {% generation %} markers"
        if not has_generation_markers(template)
        else "template's {% generation %} span leaves out the end-of-turn token"
    )
    try:
        patched = get_training_chat_template(tok)
    except Exception:
        patched = None
    if patched and _stop_token_trained(tok, patched):
        tok.chat_template = patched
        report.adapters.append(
            Adapter(
                name="chat_template",
                action="trl_training_template",
                reason=f"{why}; swapped in TRL's training version of the same template",
            )
        )
        return
    if _renders_like_chatml(tok, template):
        tok.chat_template = CHATML_TEMPLATE
        report.adapters.append(
            Adapter(
                name="chat_template",
                action="added_generation_markers",
                reason=f"{why}; the template is ChatML, replaced by the same ChatML with markers "
                "(renders identically)",
            )
        )
        return
    _ensure_tokens(tok, CHATML_TOKENS, report)
    tok.chat_template = CHATML_TEMPLATE
    report.adapters.append(
        Adapter(
            name="chat_template",
            action="fallback_chatml",
            reason=f"{why} and is not a template TRL can patch; replaced by ChatML with markers "
            "(the saved model carries it, so eval and serving prompt the same way)",
        )
    )


def end_of_turn_token(tok: Any) -> str | None:
    """The special token the template emits right after an assistant message."""
    messages = [{"role": "user", "content": "ping"}, {"role": "assistant", "content": _SENTINEL}]
    text = _render(tok, None, messages, False)
    if text is None or _SENTINEL not in text:
        return None
    suffix = text[text.rindex(_SENTINEL) + len(_SENTINEL) :]
    specials = set(tok.get_added_vocab()) | set(tok.all_special_tokens)
    found = [(suffix.find(t), -len(t), t) for t in specials if t and t in suffix]
    return min(found)[2] if found else None


def _generation_eos_ids(model_dir: Path) -> list[int]:
    ids = _read_json(model_dir / "generation_config.json").get("eos_token_id")
    if ids is None:
        return []
    return [ids] if isinstance(ids, int) else [i for i in ids if isinstance(i, int)]


def _adapt_eos(tok: Any, report: PreflightReport) -> None:
    eot = end_of_turn_token(tok)
    report.end_of_turn_token = eot
    if eot is None:
        report.notes.append("no special end-of-turn token found after assistant turns")
        return
    if tok.eos_token != eot:
        old = tok.eos_token
        tok.eos_token = eot
        report.adapters.append(
            Adapter(
                name="eos_token",
                action=f"{old!r} -> {eot!r}",
                reason=f"the chat template ends assistant turns with {eot!r} but EOS was {old!r}: "
                f"generation would not stop at the end of an answer ({old!r} stays a stop token)",
            )
        )
        if old is not None:
            report.stop_tokens.append(old)


def _adapt_pad(tok: Any, report: PreflightReport, stop_ids: set[int]) -> None:
    pad_id = tok.pad_token_id
    if tok.pad_token is not None and pad_id not in stop_ids:
        return
    vocab = tok.get_vocab()
    old = tok.pad_token
    choice = next((t for t in PAD_CANDIDATES if t in vocab and vocab[t] not in stop_ids), None)
    if choice is None:
        _ensure_tokens(tok, [NEW_PAD_TOKEN], report)
        choice = NEW_PAD_TOKEN
    tok.pad_token = choice
    how = "added" if choice in report.added_tokens else "reused existing"
    problem = (
        "tokenizer has no pad token"
        if old is None
        else f"pad {old!r} is a stop token: code that masks padding would mask the stop token too "
        "and the model would never learn to stop"
    )
    report.adapters.append(
        Adapter(name="pad_token", action=f"{old!r} -> {choice!r} ({how})", reason=problem)
    )


# ---------------------------------------------------------------- attention / packing / gc


def _choose_attention(
    cls: Any, hw: ResolvedHardware, requested: str, report: PreflightReport
) -> str:
    sdpa_or_eager = "sdpa" if getattr(cls, "_supports_sdpa", False) else "eager"
    if requested == "auto":
        if hw.flash_attn_available and getattr(cls, "_supports_flash_attn", False):
            return "flash_attention_2"
        return sdpa_or_eager
    flash_installed = hw.flash_attn_available and (
        requested == "flash_attention_2" or importlib.util.find_spec("flash_attn_interface")
    )
    usable = (
        (
            requested in FLASH_ATTENTION
            and flash_installed
            and getattr(cls, "_supports_flash_attn", False)
        )
        or (requested == "sdpa" and getattr(cls, "_supports_sdpa", False))
        or requested == "eager"
    )
    if usable:
        return requested
    report.adapters.append(
        Adapter(
            name="attn_implementation",
            action=f"{requested} -> {sdpa_or_eager}",
            reason=f"{requested} is not available for {cls.__name__} on this machine",
        )
    )
    return sdpa_or_eager


def _choose_packing(wanted: bool | str, attn: str, report: PreflightReport) -> bool:
    supported = attn in FLASH_ATTENTION
    if wanted is False:
        return False
    if supported:
        return True
    why = (
        f"attention {attn!r} has no padding-free (varlen) kernel; packed batches would need a "
        "dense block-diagonal mask, measured 2-3x slower than padded batches"
    )
    if wanted is True:
        report.adapters.append(Adapter(name="packing", action="disabled", reason=why))
    else:
        report.notes.append(f"packing off: {why}")
    return False


def _checkpointing_needed(
    config: Any, recipe: Recipe, hw: ResolvedHardware, params: int | None
) -> tuple[bool, str]:
    """Recompute activations only when they would not fit: checkpointing costs ~30% speed.

    Estimate (Korthikanti et al. 2022, memory-efficient attention): activations take about
    34 * batch * seq * hidden * layers bytes in 16-bit; model state 16 bytes per parameter for
    full fine-tuning (fp32 weights, grads, Adam moments), 2 for a frozen 16-bit LoRA base.
    """
    if hw.device != "cuda" or not hw.device_memory_bytes:
        return False, "not needed on CPU"
    text = config.get_text_config()
    hidden = getattr(text, "hidden_size", None) or getattr(text, "n_embd", None) or 0
    layers = getattr(text, "num_hidden_layers", None) or getattr(text, "n_layer", None) or 0
    batch = max(
        recipe.stages.sft.batch_size, recipe.stages.dpo.batch_size * 2 if recipe.stages.dpo else 0
    )
    act = 34 * batch * recipe.max_length * hidden * layers * (1 if hw.bf16 else 2)
    state = (params or 0) * (16 if recipe.lora is None else 2)
    budget = 0.85 * hw.device_memory_bytes
    gib = 1024**3
    verdict = f"estimated {(act + state) / gib:.1f} GiB of {hw.device_memory_bytes / gib:.1f} GiB"
    return act + state > budget, verdict


# ---------------------------------------------------------------- entry points


def run_preflight(
    model_dir: str | Path,
    recipe: Recipe,
    allowlist: Iterable[str] = (),
    *,
    repo_id: str | None = None,
) -> Prepared:
    """All checks and tokenizer-side adapters; stops at a refusal that makes loading unsafe."""
    recipe = recipe.resolve()
    hw = resolve_hardware(recipe)
    path = Path(model_dir).expanduser().resolve()
    if not (path / "config.json").is_file():
        raise InputError(f"not a model directory (no config.json): {model_dir}")
    report = PreflightReport(model_dir=str(path), repo_id=repo_id, max_length=recipe.max_length)
    prepared = Prepared(report=report, hardware=hw)

    # 1. Remote code: decided from files alone, before any of the model's code could run.
    findings = custom_code_findings(path)
    if findings:
        if _native_model_type(path):
            report.adapters.append(
                Adapter(
                    name="remote_code",
                    action="ignored",
                    reason=f"{'; '.join(findings)}, but transformers implements this architecture "
                    "natively: loading the native class, not the repo's code",
                )
            )
        elif is_allowlisted(allowlist, repo_id, path):
            report.trust_remote_code = True
            report.notes.append(f"trusting remote code (allow-listed): {'; '.join(findings)}")
        else:
            ident = repo_id or str(path)
            report.refusals.append(
                Refusal(
                    check="trust_remote_code",
                    reason=f"model requires its own Python code ({'; '.join(findings)}) and "
                    f"{ident!r} is not in trust_remote_code_allowlist; uptake never runs a "
                    "model's code unless its source is allow-listed",
                )
            )
            return prepared

    # 2. Weights: safetensors only.
    _check_weights(path, report)

    # 3. Config and model class.
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=report.trust_remote_code)
        cls = causal_lm_class(config, path, report.trust_remote_code)
    except (KeyError, ValueError, OSError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        report.refusals.append(
            Refusal(check="architecture", reason=f"not a causal LM transformers can load: {first}")
        )
        return prepared
    prepared.config, prepared.model_class = config, cls
    report.model_type = getattr(config, "model_type", None)
    report.architecture = cls.__name__

    # 4. Context length.
    ctx = context_length(config)
    report.context_length = ctx
    if ctx is None:
        report.notes.append("model config declares no context length; trusting max_length")
    elif ctx < recipe.max_length:
        if recipe.max_length_policy == "clamp":
            report.max_length = ctx
            report.adapters.append(
                Adapter(
                    name="max_length",
                    action=f"{recipe.max_length} -> {ctx}",
                    reason=f"model context is {ctx} tokens (recipe max_length_policy: clamp)",
                )
            )
        else:
            report.refusals.append(
                Refusal(
                    check="context_length",
                    reason=f"model context is {ctx} tokens, shorter than the recipe's max_length "
                    f"{recipe.max_length} (set max_length_policy: clamp to train at {ctx})",
                )
            )

    # 5. Tokenizer adapters: chat template, EOS, pad.
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=report.trust_remote_code)
    except Exception as exc:
        report.refusals.append(
            Refusal(check="tokenizer", reason=f"tokenizer failed to load: {exc}")
        )
        return prepared
    prepared.tokenizer = tok
    _adapt_chat_template(tok, report, recipe.stages.sft.assistant_only_loss)
    _adapt_eos(tok, report)
    report.eos_token = tok.eos_token
    stop_tokens = [t for t in [tok.eos_token, *report.stop_tokens] if t is not None]
    stop_ids = {tok.convert_tokens_to_ids(t) for t in stop_tokens}
    stop_ids |= set(_generation_eos_ids(path))
    _adapt_pad(tok, report, stop_ids)
    report.pad_token = tok.pad_token
    report.stop_tokens = list(dict.fromkeys(stop_tokens))
    prepared.stop_token_ids = list(dict.fromkeys(tok.convert_tokens_to_ids(t) for t in stop_tokens))
    for extra in _generation_eos_ids(path):
        if extra not in prepared.stop_token_ids:
            prepared.stop_token_ids.append(extra)

    # 6. Gradient checkpointing, attention kernel, packing.
    supported = getattr(cls, "supports_gradient_checkpointing", False)
    wanted = hw.gradient_checkpointing
    if wanted == "auto":
        wanted, why = _checkpointing_needed(config, recipe, hw, report.num_parameters)
        report.notes.append(f"gradient checkpointing {'on' if wanted else 'off'}: {why}")
    if wanted and not supported:
        report.adapters.append(
            Adapter(
                name="gradient_checkpointing",
                action="disabled",
                reason=f"{cls.__name__} does not support gradient checkpointing",
            )
        )
        wanted = False
    report.gradient_checkpointing = bool(wanted)
    attn = _choose_attention(cls, hw, recipe.hardware.attn_implementation, report)
    report.attn_implementation = attn
    report.packing = _choose_packing(recipe.stages.sft.packing, attn, report)
    if report.added_tokens and recipe.lora is not None:
        report.notes.append(
            f"new tokens {report.added_tokens} train next to LoRA: their embedding rows, or the"
            " whole embedding when the output head is tied to it"
        )
    return prepared


def preflight(
    model_dir: str | Path,
    recipe: Recipe,
    allowlist: Iterable[str] = (),
    *,
    repo_id: str | None = None,
) -> PreflightReport:
    """Inspect ``model_dir`` for ``recipe``: the report lists refusals and the adapters applied."""
    return run_preflight(model_dir, recipe, allowlist, repo_id=repo_id).report


# ---------------------------------------------------------------- model side


def load_model(
    prepared: Prepared, *, dtype: Any = None, model_dir: str | Path | None = None
) -> Any:
    """Load weights (safetensors only) with the chosen attention kernel.

    ``model_dir`` defaults to the inspected base; later stages load their predecessor's output.
    """
    import torch

    report = prepared.report
    path = Path(model_dir) if model_dir is not None else Path(report.model_dir)
    return prepared.model_class.from_pretrained(
        path,
        config=prepared.config if model_dir is None else None,
        use_safetensors=True,
        trust_remote_code=report.trust_remote_code,
        attn_implementation=report.attn_implementation,
        dtype=dtype or torch.float32,
    )


def adapt_model(model: Any, prepared: Prepared, seed: int) -> list[int]:
    """Apply the model side of the adapters: resize embeddings, sync special-token ids.

    Returns the ids of tokens added to the vocabulary (their embeddings must be trained).
    """
    import torch

    tok = prepared.tokenizer
    report = prepared.report
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tok) > rows:
        with torch.random.fork_rng():
            torch.manual_seed(seed)  # resized rows are sampled: same seed, same rows on resume
            model.resize_token_embeddings(len(tok), mean_resizing=True)
        adapter = next(
            (
                a
                for a in report.adapters
                if report.added_tokens and a.name in ("pad_token", "chat_template")
            ),
            None,
        )
        note = f"embeddings resized {rows} -> {len(tok)}"
        if adapter is not None and note not in adapter.action:
            adapter.action = f"{adapter.action}; {note}"
    text = model.config.get_text_config()
    text.pad_token_id = tok.pad_token_id
    text.eos_token_id = tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    model.config.eos_token_id = tok.eos_token_id
    gen = model.generation_config
    gen.pad_token_id = tok.pad_token_id
    gen.eos_token_id = prepared.stop_token_ids or tok.eos_token_id
    return [tok.convert_tokens_to_ids(t) for t in report.added_tokens]

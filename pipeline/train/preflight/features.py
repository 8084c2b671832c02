"""Training features chosen for the model and machine: attention kernel, packing, checkpointing.

- attention / packing: packing needs a padding-free (varlen) attention kernel; without one it is
  turned off (dense block masks measured 2-3x slower than padded batches).
- gradient checkpointing: on only when activations would not fit, and disabled for
  architectures that do not support it.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from pipeline.train.hardware import ResolvedHardware
from pipeline.train.preflight.report import Adapter, PreflightReport, Prepared
from pipeline.train.recipe import Recipe

FLASH_ATTENTION = {"flash_attention_2", "flash_attention_3"}


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
    batch = max(stage_batch(recipe, name) for name in recipe.stages.names())
    act = 34 * batch * recipe.max_length * hidden * layers * (1 if hw.bf16 else 2)
    state = (params or 0) * (16 if recipe.lora is None else 2)
    budget = 0.85 * hw.device_memory_bytes
    gib = 1024**3
    verdict = f"estimated {(act + state) / gib:.1f} GiB of {hw.device_memory_bytes / gib:.1f} GiB"
    return act + state > budget, verdict


def stage_batch(recipe: Recipe, name: str) -> int:
    """Sequences one device holds at once in a stage: DPO's pairs are two each, an RL stage's
    prompts ``num_generations`` each."""
    stage = getattr(recipe.stages, name)
    if name == "dpo":
        return int(stage.batch_size) * 2
    return int(stage.batch_size) * int(getattr(stage, "num_generations", 1))


def choose_features(prepared: Prepared, recipe: Recipe) -> None:
    """Gradient checkpointing, attention kernel and packing for this model on this machine."""
    report, hw = prepared.report, prepared.hardware
    cls, config = prepared.model_class, prepared.config
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
    sft = recipe.stages.sft
    report.packing = _choose_packing(sft.packing, attn, report) if sft is not None else False
    if report.added_tokens and recipe.lora is not None:
        report.notes.append(
            f"new tokens {report.added_tokens} train next to LoRA: their embedding rows, or the"
            " whole embedding when the output head is tied to it"
        )

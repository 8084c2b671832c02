"""Checks made from a model's files and config: remote code, weights, architecture, context.

Remote code is decided first and from files alone (``uptake.models``), before any of the
model's code could run; a refusal there stops preflight, since loading the config would run it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.train.preflight.report import Adapter, PreflightReport, Prepared, Refusal
from pipeline.train.recipe import Recipe
from uptake.models import causal_lm_class, decide_remote_code, weight_files
from uptake.models.files import MalformedWeights, safetensors_params

CONTEXT_ATTRS = (
    "max_position_embeddings",
    "n_positions",
    "max_sequence_length",
    "seq_length",
    "n_ctx",
    "max_seq_len",
)


def check_remote_code(
    model_dir: Path, allowlist: Iterable[str], repo_id: str | None, report: PreflightReport
) -> bool:
    """Record the remote-code decision; False when the model is refused (stop here)."""
    decision = decide_remote_code(model_dir, allowlist, repo_id)
    if decision.action == "ignored":
        adapter = Adapter(name="remote_code", action="ignored", reason=decision.reason)
        report.adapters.append(adapter)
    elif decision.action == "trusted":
        report.trust_remote_code = True
        report.notes.append(decision.reason)
    elif decision.refused:
        report.refusals.append(Refusal(check="trust_remote_code", reason=decision.reason))
        return False
    return True


def check_weights(model_dir: Path, report: PreflightReport) -> None:
    """Safetensors only, with headers that are headers; pickle files next to them are ignored."""
    weights = weight_files(model_dir)
    if weights.problem is not None:
        report.refusals.append(Refusal(check="weights_format", reason=weights.problem))
        return
    if weights.pickles:
        report.notes.append(
            f"ignoring pickle weight files {weights.pickles}; loading safetensors only"
        )
    try:
        report.num_parameters = safetensors_params(model_dir, weights.safetensors)
    except MalformedWeights as exc:  # from a release: refused, never a crash
        report.refusals.append(Refusal(check="weights_format", reason=str(exc)))


def load_architecture(prepared: Prepared, model_dir: Path) -> bool:
    """Load the config and find the causal-LM class; False (refused) when there is none."""
    from transformers import AutoConfig

    report = prepared.report
    try:
        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=report.trust_remote_code)
        cls = causal_lm_class(config, model_dir, report.trust_remote_code)
    except (KeyError, ValueError, OSError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        report.refusals.append(
            Refusal(check="architecture", reason=f"not a causal LM transformers can load: {first}")
        )
        return False
    prepared.config, prepared.model_class = config, cls
    report.model_type = getattr(config, "model_type", None)
    report.architecture = cls.__name__
    return True


def context_length(config: Any) -> int | None:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attr in CONTEXT_ATTRS:
        value = getattr(text, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_context_length(config: Any, recipe: Recipe, report: PreflightReport) -> None:
    """Refuse a context shorter than ``max_length``, or clamp to it when the recipe says so."""
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

"""Load a causal LM and its tokenizer from a local directory, the one way every service does.

Order matters for safety: the directory's files are checked first (safetensors weights, the
remote-code decision), then the tokenizer and weights are loaded, the model's own code only
when the decision trusts it. Device and dtype are chosen here once: bf16 on CUDA, fp32 on CPU.
Training loads through ``load_weights`` with the class, config and attention kernel its
preflight chose; evaluation and serving through ``load_model_and_tokenizer``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uptake.errors import InputError
from uptake.models.files import check_model_dir
from uptake.models.remote_code import ModelOrigin, RemoteCodeDecision, decide_remote_code


def resolve_device(device: str = "auto") -> Any:  # -> torch.device
    """``auto`` is CUDA when there is one, else CPU; anything else is passed to torch."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def inference_dtype(device: Any) -> Any:  # -> torch.dtype
    """bf16 on CUDA (half the memory, same quality for inference), fp32 on CPU."""
    import torch

    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def causal_lm_class(config: Any, model_dir: Path, trust_remote_code: bool) -> Any:
    """The class that loads ``config`` as a causal LM: the repo's own only when trusted."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    if trust_remote_code and "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {}):
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        return get_class_from_dynamic_module(
            config.auto_map["AutoModelForCausalLM"], str(model_dir), local_files_only=True
        )
    return MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]


def load_weights(
    model_dir: Path,
    *,
    trust_remote_code: bool,
    dtype: Any,
    model_class: Any = None,
    config: Any = None,
    attn_implementation: str | None = None,
) -> Any:
    """``from_pretrained`` with safetensors only; ``model_class`` defaults to the Auto class."""
    if model_class is None:
        from transformers import AutoModelForCausalLM

        model_class = AutoModelForCausalLM
    kwargs: dict[str, Any] = {}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    return model_class.from_pretrained(
        model_dir,
        config=config,
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
        dtype=dtype,
        **kwargs,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class LoadedModel:
    """A model in eval mode on its device, with its tokenizer and how it was loaded."""

    model: Any
    tokenizer: Any
    device: Any
    dtype: Any
    remote_code: RemoteCodeDecision


def load_model_and_tokenizer(
    model_dir: str | Path,
    *,
    allowlist: Iterable[str] = (),
    repo_id: str | None = None,
    device: str = "auto",
    origin: ModelOrigin | None = None,
) -> LoadedModel:
    """Load ``model_dir`` for inference; a refused or broken directory raises InputError.

    ``allowlist`` is settings' ``trust_remote_code_allowlist`` and ``repo_id`` the hub repo the
    directory came from (matched against it), or ``origin`` its source and repo id (serving
    reads them from the version's tags); callers pass them, nothing here reads settings.
    """
    from transformers import AutoTokenizer

    path = Path(model_dir)
    check_model_dir(path)
    decision = decide_remote_code(path, allowlist, repo_id, origin)
    if decision.refused:
        raise InputError(f"cannot load model from {path}: {decision.reason}")
    torch_device = resolve_device(device)
    dtype = inference_dtype(torch_device)
    trust = decision.trust_remote_code
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
        model = load_weights(path, trust_remote_code=trust, dtype=dtype)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        raise InputError(f"cannot load model from {path}: {_first_line(exc)}") from None
    return LoadedModel(
        model=model.to(torch_device).eval(),
        tokenizer=tokenizer,
        device=torch_device,
        dtype=dtype,
        remote_code=decision,
    )

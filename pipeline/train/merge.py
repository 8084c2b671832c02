"""Export: one self-contained model directory that ``AutoModelForCausalLM.from_pretrained`` loads.

LoRA adapters are merged into the base weights, so eval and serving need neither PEFT nor the
base model; the adapted tokenizer (chat template, EOS, pad) and a generation config whose stop
tokens match the template are saved alongside, and weights are safetensors in the base model's
dtype. Export reads the stage's saved output from disk on the main process only, which works the
same after a single-process run and after an FSDP run (where the in-memory model is sharded).

An allow-listed model that needs its own code gets every code file its ``auto_map`` needs
(relative imports followed) copied from the base into the stage output before it is reloaded,
and into the export: a saved checkpoint keeps ``configuration_x.py`` but not ``modeling_x.py``.
A code file that is a link leading out of the base directory is refused, never copied.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from uptake.models import copy_code_files, load_weights

PROVENANCE_FILE = "uptake_training.json"


def config_dtype(config: Any):
    """The dtype a checkpoint declares (fp32 when it declares none)."""
    import torch

    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def export_model(
    *,
    base: Any,
    stage_output: Path,
    save_dtype: Any,
    tokenizer: Any,
    stop_token_ids: list[int],
    out_dir: Path,
    provenance: dict[str, Any],
    code_dir: Path | None = None,
) -> Path:
    """Merge ``stage_output`` (a LoRA adapter over ``base``, or a full model) into ``out_dir``.

    ``base`` is the adapted base model (embeddings already resized) when the stage trained a LoRA
    adapter, None after full fine-tuning, whose stage output is itself a complete model.
    ``code_dir`` is the allow-listed base whose code the model needs (None: no remote code).
    """
    import torch

    if base is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(base, str(stage_output)).merge_and_unload()
    else:
        if code_dir is not None:  # the checkpoint lacks some of the code it was saved with
            copy_code_files(code_dir, stage_output)
        model = load_weights(
            stage_output, trust_remote_code=code_dir is not None, dtype=torch.float32
        )
    model = model.to(save_dtype)
    model.config.dtype = save_dtype
    model.config.use_cache = True
    gen = model.generation_config
    gen.eos_token_id = stop_token_ids or tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if code_dir is not None:  # allow-listed remote-code models: ship their code with the weights
        copy_code_files(code_dir, tmp)
    (tmp / PROVENANCE_FILE).write_text(
        json.dumps(provenance, indent=2, default=str), encoding="utf-8"
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)  # readers never see a half-written model directory
    return out_dir

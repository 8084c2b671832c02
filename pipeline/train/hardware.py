"""Turn the recipe's ``hardware`` section (with its ``auto`` values) into concrete settings.

The same recipe runs on a 2-core CI box and on an H100: ``auto`` means bf16 autocast, fused AdamW
and Liger kernels where the GPU and the installed packages support them, fp32 on CPU (bf16
autocast was not faster on the CPUs measured here).
"""

from __future__ import annotations

import importlib.util
from typing import Literal

from pydantic import BaseModel

from pipeline.train.recipe import Recipe


class ResolvedHardware(BaseModel):
    """What the run will actually use; logged with the run."""

    profile: str
    device: str  # "cuda" or "cpu"
    device_name: str
    bf16: bool
    optimizer: str
    liger: bool
    flash_attn_available: bool
    gradient_checkpointing: bool | Literal["auto"]  # "auto": decided by preflight from memory
    device_memory_bytes: int | None = None
    num_processes: int
    dataloader_num_workers: int
    torch_compile: bool


def liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def resolve_hardware(recipe: Recipe) -> ResolvedHardware:
    import torch

    recipe = recipe.resolve()
    hw = recipe.hardware
    cuda = recipe.profile == "gpu" and torch.cuda.is_available()
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    if hw.precision == "auto":
        bf16 = cuda and torch.cuda.is_bf16_supported()
    else:
        bf16 = hw.precision == "bf16"
    # torch >= 2.4 has fused AdamW on CPU and CUDA
    optimizer = "adamw_torch_fused" if hw.optimizer == "auto" else hw.optimizer
    liger = cuda and liger_available() if hw.liger == "auto" else bool(hw.liger)
    return ResolvedHardware(
        profile=recipe.profile or "cpu",
        device="cuda" if cuda else "cpu",
        device_name=name,
        bf16=bf16,
        optimizer=optimizer,
        liger=liger,
        flash_attn_available=cuda and flash_attn_available(),
        gradient_checkpointing=hw.gradient_checkpointing,
        device_memory_bytes=torch.cuda.get_device_properties(0).total_memory if cuda else None,
        num_processes=hw.num_processes,
        dataloader_num_workers=hw.dataloader_num_workers,
        torch_compile=hw.torch_compile,
    )

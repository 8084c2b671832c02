"""What a model directory holds, read from its files alone: no tensor is loaded, no code runs.

Safetensors only: pickle checkpoints (``.bin``, ``.pt``, ...) execute code when they are
loaded, so a directory that has nothing else is refused, and pickle files next to safetensors
are ignored.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from uptake.errors import InputError

PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl"})
SHARD_INDEX = "model.safetensors.index.json"


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; ``{}`` when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class WeightFiles(BaseModel):
    """The weight files of a model directory (names, sorted)."""

    safetensors: list[str] = Field(default_factory=list)
    pickles: list[str] = Field(default_factory=list)
    missing_shards: list[str] = Field(default_factory=list)

    @property
    def problem(self) -> str | None:
        """Why these weights cannot be loaded safely, or None."""
        if not self.safetensors:
            if self.pickles:
                return (
                    f"only pickle weights ({', '.join(self.pickles[:3])}); uptake loads "
                    "safetensors only, because pickle checkpoints (.bin, .pt) can run arbitrary "
                    "code when loaded: convert the checkpoint to .safetensors"
                )
            return "no .safetensors weights in the model directory"
        if self.missing_shards:
            return f"missing safetensors shards: {self.missing_shards}"
        return None


def weight_files(model_dir: Path) -> WeightFiles:
    files = sorted(p for p in model_dir.iterdir() if p.is_file())
    index = read_json(model_dir / SHARD_INDEX).get("weight_map", {})
    shards = set(index.values()) if isinstance(index, dict) else set()
    return WeightFiles(
        safetensors=[p.name for p in files if p.suffix == ".safetensors"],
        pickles=[p.name for p in files if p.suffix in PICKLE_SUFFIXES],
        missing_shards=sorted(s for s in shards if not (model_dir / str(s)).is_file()),
    )


def safetensors_params(model_dir: Path, names: list[str]) -> int | None:
    """Parameter count from safetensors headers, without loading any tensor."""
    total = 0
    try:
        for name in names:
            with (model_dir / name).open("rb") as fh:
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


def check_model_dir(path: Path) -> WeightFiles:
    """Refuse a directory that is missing, config-less, or has no safely loadable weights."""
    if not path.is_dir():
        raise InputError(f"model directory not found: {path}")
    if not (path / "config.json").is_file():
        raise InputError(f"not a transformers model directory (no config.json): {path}")
    weights = weight_files(path)
    if weights.problem is not None:
        raise InputError(f"refusing to load {path}: {weights.problem}")
    return weights

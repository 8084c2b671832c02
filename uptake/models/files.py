"""What a model directory holds, read from its files alone: no tensor is loaded, no code runs.

Safetensors only: pickle checkpoints (``.bin``, ``.pt``, ...) execute code when they are
loaded, so a directory that has nothing else is refused, and pickle files next to safetensors
are ignored.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable
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


MAX_HEADER_BYTES = 100_000_000  # a safetensors header larger than this is refused
_MAX_COUNT = 2**63  # safetensors sizes are u64: no real tensor has more elements


class MalformedWeights(InputError):
    """A safetensors file whose header is not one: the model is refused with this reason."""


def safetensors_header_params(path: Path) -> int:
    """Parameter count from one safetensors header (8-byte length + JSON), without the weights.

    The file comes with a release: its declared header length is capped at
    ``MAX_HEADER_BYTES`` before anything is read, and a header that is not a JSON object of
    tensors with integer shapes raises ``MalformedWeights`` saying why; so does a file that
    cannot be read.
    """
    try:
        return read_safetensors_header_params(path)
    except OSError as exc:
        raise MalformedWeights(f"{path.name}: cannot be read ({exc.strerror or exc})") from None


def read_safetensors_header_params(path: Path) -> int:
    """``safetensors_header_params`` that lets ``OSError`` through, for callers (the watcher)
    that retry a file they cannot read now instead of refusing it."""
    with path.open("rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise MalformedWeights(f"{path.name}: shorter than a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            raise MalformedWeights(
                f"{path.name}: header of {length:,} bytes declared (at most {MAX_HEADER_BYTES:,})"
            )
        raw = fh.read(length)
    if len(raw) < length:
        raise MalformedWeights(f"{path.name}: header truncated ({len(raw)} of {length} bytes)")
    try:
        header = json.loads(raw)
    except RecursionError:
        raise MalformedWeights(f"{path.name}: header nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int-string limit
        raise MalformedWeights(f"{path.name}: header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise MalformedWeights(f"{path.name}: header is not a JSON object")
    total = 0
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        shape = tensor.get("shape") if isinstance(tensor, dict) else None
        if not isinstance(shape, list):
            raise MalformedWeights(f"{path.name}: tensor {name[:100]!r} has no shape list")
        count = 1
        for dim in shape:
            if type(dim) is not int or not 0 <= dim < _MAX_COUNT:
                raise MalformedWeights(
                    f"{path.name}: tensor {name[:100]!r} has dimension {str(dim)[:40]!r}"
                )
            count *= dim
        total += count
        if count >= _MAX_COUNT or total >= _MAX_COUNT:
            raise MalformedWeights(f"{path.name}: more than 2^63 parameters declared")
    return total


def safetensors_params(model_dir: Path, names: list[str]) -> int:
    """Parameter count of all the named shards; ``MalformedWeights`` names the first bad one."""
    return sum(safetensors_header_params(model_dir / name) for name in names)


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


def folder_content_hash(folder: Path, files: Iterable[str]) -> str:
    """SHA-256 over each file's name and bytes: a ``dir`` release's revision. The watcher
    computes it on detection and the worker checks its copy against it, so it is defined once."""
    outer = hashlib.sha256()
    for rel in files:
        inner = hashlib.sha256()
        with (folder / rel).open("rb") as fh:
            while chunk := fh.read(1 << 20):
                inner.update(chunk)
        outer.update(f"{rel}\0{inner.hexdigest()}\n".encode())
    return outer.hexdigest()

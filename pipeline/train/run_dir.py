"""The run directory of one release: its layout, its identity, and what a retry may reuse.

Layout of a run directory:

    run.json             identity: recipe sha, base model fingerprint, data sha, profile
    preflight.json       the PreflightReport
    sft/checkpoints/     TRL checkpoints (resume point after a crash)
    sft/final/           the stage's adapter (LoRA) or weights (full fine-tuning)
    sft/done.json        StageResult, written once the stage is complete
    sft/merged/          merged SFT model, only when a DPO stage follows
    dpo/...              same layout for the DPO stage
    model/               the merged, self-contained output model
    result.json          TrainResult

Every file is written whole or not at all (temp file, then rename), so a process killed at any
point leaves a directory a retry can read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipeline.train.results import StageResult, TrainResult
from uptake.errors import InputError

RUN_FILE = "run.json"
PREFLIGHT_FILE = "preflight.json"
RESULT_FILE = "result.json"
DONE_FILE = "done.json"
MODEL_DIR = "model"


class RunIdentity(BaseModel):
    """What a run directory is tied to: resuming it with another recipe, base or data is refused."""

    recipe_name: str
    recipe_sha256: str
    base_model: str
    base_fingerprint: str
    repo_id: str | None
    profile: str | None
    data_sha256: dict[str, str]


# Identity fields a resumed run must match, and how an error names them.
_MUST_MATCH = {"recipe_sha256": "recipe", "base_fingerprint": "base model", "data_sha256": "data"}


def fingerprint(model_dir: Path) -> str:
    """Identity of a base model directory: its config, tokenizer files and weight file sizes."""
    digest = hashlib.sha256()
    for name in ("config.json", "tokenizer_config.json", "tokenizer.json", "chat_template.jinja"):
        path = model_dir / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    for path in sorted(model_dir.glob("*.safetensors")):
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return digest.hexdigest()


def last_checkpoint(checkpoint_dir: Path) -> Path | None:
    """Newest *complete* checkpoint: ``trainer_state.json`` is written last, so a process killed
    mid-save leaves a directory without it, which must not be resumed from."""
    if not checkpoint_dir.is_dir():
        return None
    complete = [
        p
        for p in checkpoint_dir.glob("checkpoint-*")
        if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()
    ]
    return max(complete, key=lambda p: int(p.name.split("-")[-1]), default=None)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def has_model(path: Path) -> bool:
    """An exported model directory is complete once it exists (export renames it into place)."""
    return (path / "config.json").is_file()


class StageDir:
    """Paths and bookkeeping of one stage (``sft``, ``dpo``) inside the run directory."""

    def __init__(self, run: Path, name: str) -> None:
        self.name = name
        self.dir = run / name
        self.checkpoints = self.dir / "checkpoints"
        self.final = self.dir / "final"
        self.merged = self.dir / "merged"
        self.done = self.dir / DONE_FILE

    def stored(self) -> StageResult | None:
        """The result of this stage when an earlier attempt finished it."""
        data = read_json(self.done)
        if data is None or not self.final.is_dir():
            return None
        return StageResult.model_validate(data)


class RunDir:
    """One release's run directory (see the module docstring for its layout)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.model = self.root / MODEL_DIR

    def stage(self, name: str) -> StageDir:
        return StageDir(self.root, name)

    def stored_result(self, identity: RunIdentity, resume: bool) -> TrainResult | None:
        """Check this directory may hold the run; its stored result when the run had finished.

        Raises InputError for a directory holding something else, or this run without
        ``resume``."""
        existing = read_json(self.root / RUN_FILE)
        if existing is None:
            if self.root.exists() and any(self.root.iterdir()) and not resume:
                raise InputError(f"output directory is not empty: {self.root}")
            return None
        if not resume:
            raise InputError(
                f"{self.root} already holds a training run; pass --resume to continue it, or use "
                "an empty directory"
            )
        wanted = identity.model_dump(mode="json")
        for key, what in _MUST_MATCH.items():
            if existing.get(key) != wanted[key]:
                raise InputError(
                    f"cannot resume {self.root}: it was started with a different {what} "
                    f"({str(existing.get(key))[:40]} != {str(wanted[key])[:40]})"
                )
        stored = read_json(self.root / RESULT_FILE)
        if stored is not None and has_model(self.model):
            return TrainResult.model_validate(stored)
        return None

    def start(self, identity: RunIdentity, preflight: dict[str, Any]) -> None:
        """Record the identity (once: a resumed run keeps its first) and this attempt's report."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / RUN_FILE).is_file():
            write_json(self.root / RUN_FILE, identity.model_dump(mode="json"))
        write_json(self.root / PREFLIGHT_FILE, preflight)

    def finish(self, result: TrainResult) -> None:
        write_json(self.root / RESULT_FILE, result.model_dump(mode="json"))

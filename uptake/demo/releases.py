"""The two demo releases: tiny random-init base models of different architectures.

Each is built in a staging folder (random weights as safetensors, a BPE tokenizer trained on
the track's own training text) and then moved into the watched folder with one rename, so the
watcher never sees a half-written release. The second one has the quirks real releases have
(no chat template, pad == EOS), which the pipeline's preflight must repair.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from uptake.testing.tiny_models import TinyModelSpec, build_tiny_model


class DemoRelease(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str  # folder name under the organisation: the repo id is ``org/name``
    description: str
    spec: TinyModelSpec


RELEASES: tuple[DemoRelease, ...] = (
    DemoRelease(
        name="tiny-llama",
        description="Llama, ChatML template",
        spec=TinyModelSpec(arch="llama", hidden_size=128, num_layers=2, seed=1),
    ),
    DemoRelease(
        name="tiny-qwen2",
        description="Qwen2, no template, pad=EOS",
        spec=TinyModelSpec(
            arch="qwen2",
            hidden_size=160,
            num_layers=2,
            num_heads=4,
            intermediate_size=320,
            chat_template="none",
            pad_equals_eos=True,
            seed=2,
        ),
    ),
)


def corpus(train_jsonl: Path) -> Iterator[str]:
    """Every message text of the training file: what the tokenizer is trained on."""
    with train_jsonl.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                for message in json.loads(line)["messages"]:
                    yield message["content"]


def build(release: DemoRelease, staging: Path, train_jsonl: Path) -> Path:
    """Build ``release`` under ``staging``; return its folder (not yet released)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the live view owns the terminal
    out = staging / release.name
    if out.exists():
        shutil.rmtree(out)
    build_tiny_model(out, release.spec, corpus(train_jsonl))
    (out / "README.md").write_text(
        f"---\nlicense: apache-2.0\npipeline_tag: text-generation\n---\n"
        f"# {release.name}\n\nA tiny randomly initialised {release.description} model "
        "built by `uptake demo`.\n",
        encoding="utf-8",
    )
    return out


def publish(built: Path, releases: Path, organisation: str) -> Path:
    """Move a built model into ``releases/<organisation>/`` in one rename; return its folder."""
    target = releases / organisation / built.name
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    for file in built.iterdir():  # "created" now: the dir source reads the files' mtimes
        os.utime(file)
    os.replace(built, target)
    return target

"""Fixtures for the training tests: tiny models of three architectures, built once per session."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.train.helpers import corpus, memo_rows
from uptake.testing.tiny_models import TinyModelSpec, build_tiny_model

# The three base models the same recipe must handle, each with a different known defect.
ARCH_CASES = {
    "llama": TinyModelSpec(arch="llama", chat_template="generation", pad_equals_eos=False),
    "qwen2": TinyModelSpec(arch="qwen2", chat_template="plain", pad_equals_eos=False),
    "gpt2": TinyModelSpec(arch="gpt2", chat_template="none", pad_equals_eos=True),
}
# What preflight must report for each (adapter name -> action prefix).
EXPECTED_ADAPTERS = {
    "llama": {"eos_token": "'<|endoftext|>' -> '<|im_end|>'"},
    "qwen2": {"chat_template": "added_generation_markers", "eos_token": "'<|endoftext|>'"},
    "gpt2": {
        "chat_template": "fallback_chatml",
        "eos_token": "'<|endoftext|>'",
        "pad_token": "'<|endoftext|>' -> '<|pad|>'",
    },
}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    text = corpus(memo_rows(200))
    return {
        name: build_tiny_model(root / name, spec, corpus=text) for name, spec in ARCH_CASES.items()
    }


@pytest.fixture(scope="session")
def estoppel_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama whose tokenizer knows the word the RL tests' rubric rewards."""
    from tests.train.rl_helpers import sometimes_estoppel_rows

    root = tmp_path_factory.mktemp("tiny-estoppel")
    return build_tiny_model(
        root / "llama", ARCH_CASES["llama"], corpus=corpus(sometimes_estoppel_rows(200))
    )


@pytest.fixture
def model_copy(tiny_models: dict[str, Path], tmp_path: Path) -> Callable[[str], Path]:
    """A private copy of a tiny model, for tests that edit the model directory."""

    def copy(name: str) -> Path:
        dest = tmp_path / f"model-{name}"
        shutil.copytree(tiny_models[name], dest)
        return dest

    return copy

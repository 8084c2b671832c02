"""Fixtures for the evaluation tests: a tiny real model and a scripted loopback judge."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.eval.helpers import LoopbackServer, ScriptedJudge, train_corpus
from uptake.testing.tiny_models import TinyModelSpec, build_tiny_model


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and on a shared 2-core machine oversubscribed
    OpenMP threads made generation 15x slower. Restored after each test."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random ~0.4M-parameter Llama with a ChatML template and a tokenizer for legal text."""
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny") / "llama", TinyModelSpec(), corpus=train_corpus()
    )


@pytest.fixture(scope="session")
def lively_backend(lively_model: Path):  # -> TransformersBackend
    from pipeline.eval.generate import TransformersBackend

    return TransformersBackend(lively_model, device="cpu")


@pytest.fixture
def judge_server() -> Iterator[tuple[ScriptedJudge, str]]:
    """(the scripted judge, its base URL ending in /v1)."""
    judge = ScriptedJudge()
    with LoopbackServer(judge.app) as server:
        yield judge, f"{server.url}/v1"


@pytest.fixture(scope="session")
def lively_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its transformer layers scaled up 5x.

    At the default init a random model just repeats the prompt's last token ("\\n"), so every
    output is the same empty string and "batched == unbatched" would prove nothing. Scaled
    layers make the outputs depend on the prompt (48 distinct texts for 48 prompts).
    """
    spec = TinyModelSpec(weight_scale=5.0)
    return build_tiny_model(
        tmp_path_factory.mktemp("lively") / "llama", spec, corpus=train_corpus()
    )


@pytest.fixture(scope="session")
def legal_suite():  # -> Suite
    from pipeline.eval import load_suite
    from tests.eval.helpers import LEGAL

    return load_suite(LEGAL / "suite.jsonl")

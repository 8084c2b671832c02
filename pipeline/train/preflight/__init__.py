"""Preflight: inspect a new base model, refuse what is unsafe, adapt what naive recipes trip on.

New releases break recipes in known ways. Each check either refuses the model (with the reason a
person needs) or records an *adapter*, a small, logged change that makes the one recipe work
unchanged. The modules, in the order ``run_preflight`` uses them:

- ``checks``: from files and config alone: remote code (allow-list, native-architecture rule),
  safetensors-only weights, the architecture, the context length;
- ``tokenizer_adapt``: chat template (``{% generation %}`` markers or a ChatML fallback), EOS
  equal to the end-of-turn token, a pad token that is no stop token;
- ``features``: attention kernel, packing, gradient checkpointing;
- ``report``: what was found and done (``PreflightReport``), printed and logged to MLflow;
- ``model``: the model side of the adapters (load the weights, resize embeddings, sync ids).
"""

from pipeline.train.preflight.model import adapt_model, load_model
from pipeline.train.preflight.report import (
    Adapter,
    PreflightError,
    PreflightReport,
    Prepared,
    Refusal,
)
from pipeline.train.preflight.run import preflight, run_preflight
from pipeline.train.preflight.tokenizer_adapt import end_of_turn_token

__all__ = [
    "Adapter",
    "PreflightError",
    "PreflightReport",
    "Prepared",
    "Refusal",
    "adapt_model",
    "end_of_turn_token",
    "load_model",
    "preflight",
    "run_preflight",
]

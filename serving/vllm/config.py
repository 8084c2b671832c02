"""The vLLM engine's settings: defined in ``uptake.serving_config`` (``serving.vllm``).

The settings object lives in ``uptake/``, which imports no service package, so the model is
defined there and only re-exported here for the engine's callers. The engine owns the
arguments that decide *which* model answers and *how safely* it loads (``--model``,
``--served-model-name``, ``--host``, ``--port``, ``--load-format safetensors``,
``--trust-remote-code`` from the allow-list rule); ``extra_args`` naming one is refused when
the config loads.
"""

from __future__ import annotations

from uptake.serving_config import VLLM_MANAGED_ARGS, VLLM_MODULE, VllmConfig

__all__ = ["VLLM_MANAGED_ARGS", "VLLM_MODULE", "VllmConfig"]

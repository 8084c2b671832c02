"""Engines behind the seam (``serving.engine``): built-in transformers, or supervised vLLM."""

from __future__ import annotations

from serving.engine import Engine
from uptake.settings import Settings


def make_engine(settings: Settings, name: str | None = None) -> Engine:
    """The engine ``name`` (default ``serving.engine``) configured from ``settings``."""
    cfg = settings.serving
    chosen = name or cfg.engine
    if chosen == "vllm":
        from serving.vllm.engine import VllmEngine  # httpx only; vLLM itself runs as a child

        return VllmEngine(
            cfg.vllm,
            settings.state_dir,
            trust_remote_code_allowlist=settings.trust_remote_code_allowlist,
            max_queue=cfg.max_queue,
        )
    from serving.engines.transformers_engine import TransformersEngine

    return TransformersEngine(
        device=cfg.device,
        allowlist=list(settings.trust_remote_code_allowlist),
        batch_window_ms=cfg.batch_window_ms,
        max_batch=cfg.max_batch,
        max_queue=cfg.max_queue,
        torch_threads=cfg.torch_threads,
    )

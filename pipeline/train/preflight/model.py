"""The model side of preflight's adapters: load the weights as preflight decided, then resize
embeddings for added tokens and sync the special-token ids into the configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.train.preflight.report import Prepared
from uptake.models import load_weights


def load_model(
    prepared: Prepared, *, dtype: Any = None, model_dir: str | Path | None = None
) -> Any:
    """Load weights (safetensors only) with the chosen class and attention kernel.

    ``model_dir`` defaults to the inspected base; later stages load their predecessor's output.
    """
    import torch

    report = prepared.report
    path = Path(model_dir) if model_dir is not None else Path(report.model_dir)
    return load_weights(
        path,
        model_class=prepared.model_class,
        config=prepared.config if model_dir is None else None,
        trust_remote_code=report.trust_remote_code,
        attn_implementation=report.attn_implementation,
        dtype=dtype or torch.float32,
    )


def adapt_model(model: Any, prepared: Prepared, seed: int) -> list[int]:
    """Apply the model side of the adapters: resize embeddings, sync special-token ids.

    Returns the ids of tokens added to the vocabulary (their embeddings must be trained).
    """
    import torch

    tok = prepared.tokenizer
    report = prepared.report
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tok) > rows:
        with torch.random.fork_rng():
            torch.manual_seed(seed)  # resized rows are sampled: same seed, same rows on resume
            model.resize_token_embeddings(len(tok), mean_resizing=True)
        adapter = next(
            (
                a
                for a in report.adapters
                if report.added_tokens and a.name in ("pad_token", "chat_template")
            ),
            None,
        )
        note = f"embeddings resized {rows} -> {len(tok)}"
        if adapter is not None and note not in adapter.action:
            adapter.action = f"{adapter.action}; {note}"
    text = model.config.get_text_config()
    text.pad_token_id = tok.pad_token_id
    text.eos_token_id = tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    model.config.eos_token_id = tok.eos_token_id
    gen = model.generation_config
    gen.pad_token_id = tok.pad_token_id
    gen.eos_token_id = prepared.stop_token_ids or tok.eos_token_id
    return [tok.convert_tokens_to_ids(t) for t in report.added_tokens]

"""Cost beside quality: what one task of the suite costs a model, from tokens or GPU time.

An API model is priced per million tokens in (prompt) and out (generated): the tokens the
endpoint reports in ``usage``, or that the local tokenizer counted. A self-hosted model is
priced by the GPU hour and its measured throughput: the generation wall time of the whole
suite, divided over its tasks (batching included, as it would be in serving). The report
draws every model scored on a suite by this figure (docs/evaluation.md "Cost").
"""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from pipeline.eval.results import EvalResult
from uptake.mlflow_contract import (
    COST_PER_TASK,
    GENERATION_SECONDS,
    GPU_HOUR_PRICE,
    PRICE_IN_PER_MTOK,
    PRICE_OUT_PER_MTOK,
    TOKENS_IN,
    TOKENS_OUT,
)

MAX_PRICE = 1e9  # any real price is far below; a bignum is a typo


class Price(BaseModel):
    """Per million tokens in and out (an API), or per GPU hour (self-hosted): one kind."""

    in_per_mtok: float | None = Field(None, ge=0, le=MAX_PRICE)
    out_per_mtok: float | None = Field(None, ge=0, le=MAX_PRICE)
    gpu_hour: float | None = Field(None, ge=0, le=MAX_PRICE)

    @model_validator(mode="after")
    def _one_kind(self) -> Price:
        tokens = self.in_per_mtok is not None or self.out_per_mtok is not None
        if tokens and self.gpu_hour is not None:
            raise ValueError(
                "give token prices (--price-in/--price-out) or a GPU-hour price, not both"
            )
        if not tokens and self.gpu_hour is None:
            raise ValueError("a price needs --price-in/--price-out or --gpu-hour-price")
        return self

    @classmethod
    def of(
        cls, price_in: float | None, price_out: float | None, gpu_hour: float | None
    ) -> Price | None:
        """The price the flags give, or None when none was given."""
        if price_in is None and price_out is None and gpu_hour is None:
            return None
        return cls(in_per_mtok=price_in, out_per_mtok=price_out, gpu_hour=gpu_hour)


def cost_per_task(result: EvalResult, price: Price) -> float | None:
    """One task's cost in the price's unit; None when the run lacks what the price needs
    (a GPU-hour price of results read back from a file, which carry no generation time)."""
    n = len(result.tasks)
    if not n:
        return None
    if price.gpu_hour is not None:
        seconds = result.generation.seconds
        return price.gpu_hour * seconds / 3600 / n if seconds > 0 else None
    tokens = (price.in_per_mtok or 0.0) * result.tokens_in + (
        price.out_per_mtok or 0.0
    ) * result.tokens_out
    return tokens / 1e6 / n


def cost_metrics(result: EvalResult, price: Price | None, prefix: str = "") -> dict[str, float]:
    """Tokens in/out, generation seconds (when measured) and, with a price, cost per task."""
    out = {
        f"{prefix}{TOKENS_IN}": float(result.tokens_in),
        f"{prefix}{TOKENS_OUT}": float(result.tokens_out),
    }
    if result.generation.seconds > 0:
        out[f"{prefix}{GENERATION_SECONDS}"] = result.generation.seconds
    if price is None:
        return out
    cost = cost_per_task(result, price)
    if cost is not None:
        out[f"{prefix}{COST_PER_TASK}"] = cost
    for name, value in (
        (PRICE_IN_PER_MTOK, price.in_per_mtok),
        (PRICE_OUT_PER_MTOK, price.out_per_mtok),
        (GPU_HOUR_PRICE, price.gpu_hour),
    ):
        if value is not None:
            out[f"{prefix}{name}"] = value
    return out

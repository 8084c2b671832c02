"""Cost beside quality: what one task of the suite costs a model, from tokens or GPU time.

Tokens are those the endpoint reports in ``usage``, or that the local tokenizer counted; the
price and the formula are uptake.cost's, shared with the report, which draws every model
scored on a suite by this figure (docs/evaluation.md "Cost").
"""

from __future__ import annotations

from pipeline.eval.results import EvalResult
from uptake.cost import Price, task_cost
from uptake.mlflow_contract import (
    COST_PER_TASK,
    CPU_HOUR_PRICE,
    GENERATION_SECONDS,
    GPU_HOUR_PRICE,
    PRICE_IN_PER_MTOK,
    PRICE_OUT_PER_MTOK,
    TOKENS_IN,
    TOKENS_OUT,
)


def cost_per_task(result: EvalResult, price: Price) -> float | None:
    """One task's cost in the price's unit; None when the run lacks what the price needs
    (an hour price of results read back from a file, which carry no generation time)."""
    return task_cost(
        price,
        len(result.tasks),
        tokens_in=result.tokens_in,
        tokens_out=result.tokens_out,
        generation_seconds=result.generation.seconds,
    )


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
        (CPU_HOUR_PRICE, price.cpu_hour),
    ):
        if value is not None:
            out[f"{prefix}{name}"] = value
    return out

"""What one task of a suite costs a model: the one price model and formula uptake uses.

The eval engine logs ``cost_per_task`` when it is given a price; the adoption report prices a
run that logged none from its logged tokens and generation time. Both must compute the same
figure, so the price and the formula live here (docs/evaluation.md "Cost"):

- an API model is priced per million tokens in (prompt) and out (generated);
- a self-hosted model by the hour of the machine it generates on (a GPU hour, or a CPU
  machine's hour) and its measured throughput: the suite's generation wall time divided over
  its tasks (batching included, as it would be in serving).

The worker prices its runs with ``hour_price``: the configured price of the device its
evaluation ran on (``worker.cpu_hour_price`` / ``worker.gpu_hour_price``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_PRICE = 1e9  # any real price is far below; a bignum is a typo


class Price(BaseModel):
    """Per million tokens in and out (an API), per GPU hour or per CPU-machine hour
    (self-hosted): one kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    in_per_mtok: float | None = Field(None, ge=0, le=MAX_PRICE)
    out_per_mtok: float | None = Field(None, ge=0, le=MAX_PRICE)
    gpu_hour: float | None = Field(None, ge=0, le=MAX_PRICE)
    cpu_hour: float | None = Field(None, ge=0, le=MAX_PRICE)

    @model_validator(mode="after")
    def _one_kind(self) -> Price:
        tokens = self.in_per_mtok is not None or self.out_per_mtok is not None
        kinds = sum((tokens, self.gpu_hour is not None, self.cpu_hour is not None))
        if kinds > 1:
            raise ValueError(
                "give token prices (--price-in/--price-out), a GPU-hour price or a CPU-hour "
                "price: one kind, not both"
            )
        if not kinds:
            raise ValueError(
                "a price needs --price-in/--price-out, --gpu-hour-price or --cpu-hour-price"
            )
        return self

    @property
    def hour(self) -> float | None:
        """The price of an hour of the machine (GPU or CPU); None for token prices."""
        return self.gpu_hour if self.gpu_hour is not None else self.cpu_hour

    @classmethod
    def of(
        cls,
        price_in: float | None,
        price_out: float | None,
        gpu_hour: float | None,
        cpu_hour: float | None = None,
    ) -> Price | None:
        """The price the flags give, or None when none was given."""
        if price_in is None and price_out is None and gpu_hour is None and cpu_hour is None:
            return None
        return cls(
            in_per_mtok=price_in, out_per_mtok=price_out, gpu_hour=gpu_hour, cpu_hour=cpu_hour
        )


def hour_price(device: str, *, cpu_hour: float | None, gpu_hour: float | None) -> Price | None:
    """The price of an hour of ``device`` (torch's device type: ``cuda`` is a GPU, anything
    else a CPU machine), or None when that kind has no price."""
    if device == "cuda":
        return None if gpu_hour is None else Price(gpu_hour=gpu_hour)
    return None if cpu_hour is None else Price(cpu_hour=cpu_hour)


def task_cost(
    price: Price,
    n_tasks: float,
    *,
    tokens_in: float | None,
    tokens_out: float | None,
    generation_seconds: float | None,
) -> float | None:
    """One task's cost in the price's unit; None when what the price needs was not measured
    (no tasks, no generation time for an hour price, no token counts for a token price)."""
    if not n_tasks:
        return None
    hour = price.hour
    if hour is not None:
        if not generation_seconds or generation_seconds <= 0:
            return None
        return hour * generation_seconds / 3600 / n_tasks
    if tokens_in is None or tokens_out is None:
        return None
    spent = (price.in_per_mtok or 0.0) * tokens_in + (price.out_per_mtok or 0.0) * tokens_out
    return spent / 1e6 / n_tasks

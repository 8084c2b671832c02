"""The cost flags ``uptake eval`` and ``uptake report`` share (``uptake.cost.Price.of`` reads
them): one spelling and help text for both commands."""

from __future__ import annotations

from typing import Annotated

import typer

PriceInOption = Annotated[
    float | None,
    typer.Option("--price-in", min=0, help="Price per million prompt tokens (cost per task)."),
]
PriceOutOption = Annotated[
    float | None,
    typer.Option("--price-out", min=0, help="Price per million generated tokens."),
]
GpuHourPriceOption = Annotated[
    float | None,
    typer.Option(
        "--gpu-hour-price",
        min=0,
        help="Price of a GPU hour (self-hosted): cost per task from the generation time.",
    ),
]
CpuHourPriceOption = Annotated[
    float | None,
    typer.Option(
        "--cpu-hour-price",
        min=0,
        help="Price of an hour of the CPU machine (self-hosted, no GPU): cost per task from the "
        "generation time.",
    ),
]

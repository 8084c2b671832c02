"""Plain data returned by the training engine (no torch import: the CLI and worker load it fast)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field


class TrainProgress(BaseModel):
    """One progress update, sent after each optimizer step (and once when a stage starts)."""

    stage: str
    step: int
    total_steps: int
    loss: float | None = None
    tokens: int = 0  # non-padding tokens seen in this stage, resumed sessions included
    tokens_per_s: float = 0.0  # this session's average
    epoch: float | None = None
    elapsed_s: float = 0.0
    reward_mean: float | None = None  # an RL stage's latest rollout reward mean


ProgressHook = Callable[[TrainProgress], None]


class StageResult(BaseModel):
    """One finished stage (``sft``, ``dpo``, ``grpo`` or ``sdpo``)."""

    name: str
    steps: int
    tokens: int
    session_steps: int  # steps run by this process; fewer than ``steps`` after a resume
    session_tokens: int
    train_runtime_s: float
    tokens_per_s: float
    final_loss: float | None
    mean_loss: float | None
    resumed_from_step: int | None = None
    losses: list[tuple[int, float]] = Field(default_factory=list)
    # RL stages: per-step rollout statistics, ``reward/<name>`` -> [(step, value)]
    metrics: dict[str, list[tuple[int, float]]] = Field(default_factory=dict)


class TrainResult(BaseModel):
    """What ``train()`` produced: the merged model directory and how the run went."""

    model_dir: Path
    out_dir: Path
    steps: int
    tokens: int
    tokens_per_s: float
    final_loss: float | None
    wall_s: float
    resumed_from_step: int | None = None
    recipe_name: str
    recipe_sha256: str
    profile: str
    stages: list[StageResult]
    preflight: dict[str, Any]
    hardware: dict[str, Any]
    data_sha256: dict[str, str] = Field(default_factory=dict)

    def summary_rows(self) -> list[tuple[str, str]]:
        loss = f"{self.final_loss:.4f}" if self.final_loss is not None else "n/a"
        resumed = f" (resumed from step {self.resumed_from_step})" if self.resumed_from_step else ""
        return [
            ("model", str(self.model_dir)),
            ("steps", f"{self.steps}{resumed}"),
            ("tokens", f"{self.tokens:,}"),
            ("tokens/s", f"{self.tokens_per_s:,.0f}"),
            ("final loss", loss),
            ("wall time", f"{self.wall_s:.1f} s"),
        ]

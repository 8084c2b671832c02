"""Progress reporting: a transformers callback that hands ``TrainProgress`` to the caller.

The trainer itself prints nothing. The CLI turns progress into a rich bar; the pipeline worker
turns it into ``run.stage`` events. A failing hook (a broker hiccup) is logged, never allowed to
kill hours of training.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from transformers import TrainerCallback

from pipeline.train.results import ProgressHook, TrainProgress

log = logging.getLogger(__name__)


class ProgressCallback(TrainerCallback):
    """Emit ``TrainProgress`` on every step; the loss is the latest logged one."""

    def __init__(self, stage: str, hook: ProgressHook | None, reward: Any = None) -> None:
        self.stage = stage
        self.hook = hook
        self.reward = reward  # an RL stage's RubricReward: its latest mean goes with progress
        self.loss: float | None = None
        self.losses: list[tuple[int, float]] = []
        self._t0 = time.perf_counter()
        self._tokens0 = 0

    def _emit(self, state) -> None:
        if self.hook is None or not state.is_world_process_zero:
            return
        elapsed = time.perf_counter() - self._t0
        tokens = int(state.num_input_tokens_seen or 0)
        rate = (tokens - self._tokens0) / elapsed if elapsed > 0 else 0.0
        update = TrainProgress(
            stage=self.stage,
            step=state.global_step,
            total_steps=state.max_steps,
            loss=self.loss,
            tokens=tokens,
            tokens_per_s=rate,
            epoch=state.epoch,
            elapsed_s=elapsed,
            reward_mean=self.reward.latest_mean if self.reward is not None else None,
        )
        try:
            self.hook(update)
        except Exception:  # the hook is the caller's: report, keep training
            log.warning(
                "progress hook failed at %s step %s", self.stage, state.global_step, exc_info=True
            )

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()
        self._tokens0 = int(state.num_input_tokens_seen or 0)
        self._emit(state)

    def on_step_end(self, args, state, control, **kwargs):
        if not control.should_log:  # else on_log emits, with this step's loss
            self._emit(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if isinstance(loss, int | float) and math.isfinite(loss):
            self.loss = float(loss)
            self.losses.append((state.global_step, self.loss))
            self._emit(state)

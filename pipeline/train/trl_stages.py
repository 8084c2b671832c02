"""One stage runner for SFT, DPO, GRPO and SDPO: train with TRL (or reuse a finished stage),
then export.

A stage is described by a ``StagePlan`` (what it trains on, which model it starts from, where its
merged model goes) and runs under a ``StageContext`` shared by every stage of the run (recipe,
preflight report, hardware, dtypes, provenance). Both are plain values passed in, so a stage
reads nothing that a later stage rebinds. The stages differ only in the TRL trainer and config
they build (``SFTTrainer``/``SFTConfig``, ``DPOTrainer``/``DPOConfig``, ``GRPOTrainer``/
``GRPOConfig``, ``RubricSDPOTrainer``/``SDPOConfig``, see ``config.py``); the RL stages also
build the rubric reward (``reward.py``), whose per-step series goes into the stage's result.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pipeline.train.config import dpo_config, grpo_config, lora_config, sdpo_config, sft_config
from pipeline.train.data import to_dataset
from pipeline.train.hardware import ResolvedHardware
from pipeline.train.merge import export_model
from pipeline.train.preflight import PreflightReport, Prepared, adapt_model, load_model
from pipeline.train.recipe import Recipe
from pipeline.train.results import ProgressHook, StageResult
from pipeline.train.reward import RubricReward
from pipeline.train.run_dir import StageDir, has_model, last_checkpoint, read_json, write_json

if TYPE_CHECKING:
    from pipeline.eval.suite import Task
    from uptake.settings import JudgeSettings

log = logging.getLogger(__name__)

StageName = Literal["sft", "dpo", "grpo", "sdpo"]
SERIES_FILE = "rewards.jsonl"  # an RL stage's per-step reward statistics, kept across resumes


@dataclass(frozen=True)
class StageContext:
    """What every stage of one run shares."""

    recipe: Recipe
    report: PreflightReport
    hardware: ResolvedHardware
    train_dtype: Any  # torch dtype of the weights being trained
    save_dtype: Any  # torch dtype of the exported model (the base checkpoint's own)
    merge_in_save_dtype: bool  # a big model is merged in its 16-bit dtype, not in fp32
    provenance: dict[str, Any]  # written into every exported model
    code_dir: Path | None  # an allow-listed remote-code base: its code ships with the model
    resume: bool
    on_progress: ProgressHook | None
    judge: JudgeSettings | None = None  # the track's judge, for RL stages' judge criteria
    judge_cache_dir: Path | None = None

    @property
    def lora(self) -> bool:
        return self.recipe.lora is not None


@dataclass(frozen=True)
class StagePlan:
    """One stage: its data, the model it starts from, and where its merged model goes."""

    name: StageName
    rows: list[dict[str, Any]]
    prepared: Prepared  # tokenizer, config and model class the stage loads with
    start: Path | None  # None: the base model, adapted by preflight; else an earlier stage's model
    target: Path
    paths: StageDir
    tasks: tuple[Task, ...] = ()  # an RL stage's rubric tasks (rows name them by task_id)


def is_main_process() -> bool:
    """Rank 0 of a launched run (torchrun's ``RANK``), else accelerate's view. ``RANK`` first:
    on CPU ranks, accelerate's state can take every rank for the main one, and two ranks then
    wrote the run directory's files at once (seen in CI)."""
    import os

    if "RANK" in os.environ:
        return os.environ["RANK"] == "0"
    from accelerate import PartialState

    return PartialState().is_main_process


def wait_for_everyone() -> None:
    from accelerate import PartialState

    PartialState().wait_for_everyone()


def free_memory() -> None:
    """Return memory of models the caller has just ``del``-ed (the next stage needs it)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_stage(plan: StagePlan, ctx: StageContext, earlier: Sequence[StageResult]) -> StageResult:
    """Train the stage unless a previous attempt finished it, then export its merged model
    unless that exists too. ``earlier``: the results of the stages before this one."""
    result = plan.paths.stored() if ctx.resume else None
    if result is None:
        result = _train_stage(plan, ctx)
        wait_for_everyone()
    if not has_model(plan.target) and is_main_process():
        _export_stage(plan, ctx, [*(s.name for s in earlier), plan.name])
    wait_for_everyone()
    return result


def _load_start_model(plan: StagePlan, ctx: StageContext, dtype: Any) -> tuple[Any, list[int]]:
    """The model the stage starts from, and the ids of tokens preflight added to it (those
    embedding rows are untrained); an earlier stage's output is already adapted."""
    model = load_model(plan.prepared, dtype=dtype, model_dir=plan.start)
    if plan.start is not None:
        return model, []
    return model, adapt_model(model, plan.prepared, ctx.recipe.seed)


def _rubric_reward(plan: StagePlan, ctx: StageContext, judge: Any) -> RubricReward:
    stage = getattr(ctx.recipe.stages, plan.name)
    return RubricReward(
        plan.tasks,
        all_pass_bonus=stage.reward.all_pass_bonus,
        num_generations=stage.num_generations,
        judge=judge,
        concurrency=stage.reward.judge_concurrency,
        series_path=plan.paths.dir / SERIES_FILE,
        write_series=is_main_process(),
    )


def _open_judge(plan: StagePlan, ctx: StageContext) -> Any:
    """The track's judge for an RL stage whose tasks have judge criteria, else None."""
    if not any(t.has_judge for t in plan.tasks):
        return None
    from pipeline.eval.judge import Judge

    if ctx.judge is None or not ctx.judge.configured:
        from uptake.errors import InputError

        raise InputError(
            f"stages.{plan.name}.data has judge criteria but no judge is configured "
            "(set judge.base_url and judge.model)"
        )
    cache = ctx.judge_cache_dir or plan.paths.dir / "judge-cache"
    return Judge(ctx.judge, cache_dir=cache)


def _build_trainer(
    plan: StagePlan, ctx: StageContext, callback: Any, reward: RubricReward | None
) -> Any:
    """The TRL trainer for the stage, on a freshly loaded start model."""
    from trl import DPOTrainer, GRPOTrainer, SFTTrainer

    model, added_ids = _load_start_model(plan, ctx, ctx.train_dtype)
    common = {
        "model": model,
        "train_dataset": to_dataset(plan.rows),
        "processing_class": plan.prepared.tokenizer,
        "peft_config": lora_config(ctx.recipe, added_ids, model),
        "callbacks": [callback],
    }
    output_dir = plan.paths.checkpoints
    if plan.name == "sft":
        args = sft_config(ctx.recipe, ctx.report, ctx.hardware, output_dir)
        return SFTTrainer(args=args, **common)
    if plan.name == "grpo":
        assert reward is not None
        args = grpo_config(ctx.recipe, ctx.report, ctx.hardware, output_dir)
        return GRPOTrainer(reward_funcs=[reward], args=args, **common)
    if plan.name == "sdpo":
        from pipeline.train.sdpo import RubricSDPOTrainer

        assert reward is not None
        _check_sdpo_teacher(ctx, added_ids)
        args = sdpo_config(ctx.recipe, ctx.report, ctx.hardware, output_dir)
        try:
            return RubricSDPOTrainer(reward_funcs=[reward], rubric=reward, args=args, **common)
        except ValueError as exc:  # TRL's teacher checks: a recipe choice, not a crash
            if "teacher_model_kind" not in str(exc):
                raise
            _check_sdpo_teacher(ctx, added_ids or [-1])
            raise
    # LoRA's reference model is the base under the adapter; full fine-tuning needs a copy.
    ref = None if ctx.lora else _load_start_model(plan, ctx, ctx.train_dtype)[0]
    args = dpo_config(ctx.recipe, ctx.report, ctx.hardware, output_dir)
    return DPOTrainer(ref_model=ref, args=args, **common)


def _check_sdpo_teacher(ctx: StageContext, added_ids: list[int]) -> None:
    """TRL's EMA teacher needs pure LoRA (or, in full fine-tuning, reloads the start model from
    disk): tokens preflight adds to the base break both, so say what to do instead."""
    stage = ctx.recipe.stages.sdpo
    if stage is not None and stage.teacher == "ema" and added_ids:
        from uptake.errors import InputError

        raise InputError(
            "stages.sdpo.teacher: 'ema' cannot start from a base that preflight adds tokens to "
            "(their embedding rows train next to LoRA); put an sft stage before sdpo, or set "
            "teacher: base or live"
        )


def _train_stage(plan: StagePlan, ctx: StageContext) -> StageResult:
    from transformers import PrinterCallback, set_seed

    from pipeline.train.progress import ProgressCallback

    set_seed(ctx.recipe.seed)
    judge = _open_judge(plan, ctx) if plan.tasks else None
    try:
        reward = _rubric_reward(plan, ctx, judge) if plan.tasks else None
        if reward is not None:
            reward.resume_series(_resume_point(plan.paths, ctx.resume)[1])
        callback = ProgressCallback(plan.name, ctx.on_progress, reward=reward)
        trainer = _build_trainer(plan, ctx, callback, reward)
        trainer.remove_callback(PrinterCallback)
        result = _train_and_save(trainer, plan.paths, callback, ctx.resume, reward)
    finally:
        if judge is not None:
            judge.close()
    del trainer, callback
    free_memory()
    return result


def _resume_point(stage: StageDir, resume: bool) -> tuple[Path | None, int | None, int | None]:
    """(checkpoint to resume from, its global step, its tokens seen), or Nones."""
    ckpt = last_checkpoint(stage.checkpoints) if resume else None
    if ckpt is None:
        return None, None, None
    state = read_json(ckpt / "trainer_state.json") or {}
    step = int(state.get("global_step", 0))
    log.info("%s: resuming from %s (step %s)", stage.name, ckpt, step)
    return ckpt, step, int(state.get("num_input_tokens_seen", 0))


def _train_and_save(
    trainer: Any, stage: StageDir, callback: Any, resume: bool, reward: RubricReward | None = None
) -> StageResult:
    """Train (resuming from the last complete checkpoint if asked), save the stage output."""
    ckpt, resumed_step, tokens_before = _resume_point(stage, resume)
    output = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    trainer.save_model(str(stage.final))
    state = trainer.state
    runtime = float(output.metrics.get("train_runtime", 0.0))
    tokens = int(state.num_input_tokens_seen or 0)
    session_tokens = tokens - (tokens_before or 0)
    losses = [(int(e["step"]), float(e["loss"])) for e in state.log_history if "loss" in e]
    result = StageResult(
        name=stage.name,
        steps=state.global_step,
        tokens=tokens,
        session_steps=state.global_step - (resumed_step or 0),
        session_tokens=session_tokens,
        train_runtime_s=runtime,
        tokens_per_s=session_tokens / runtime if runtime > 0 else 0.0,
        final_loss=losses[-1][1] if losses else None,
        mean_loss=float(output.training_loss) if output.training_loss is not None else None,
        resumed_from_step=resumed_step,
        losses=losses or callback.losses,
        metrics=reward.metric_series() if reward is not None else {},
    )
    if is_main_process():
        write_json(stage.done, result.model_dump(mode="json"))
    return result


def _export_stage(plan: StagePlan, ctx: StageContext, stage_names: list[str]) -> None:
    """Merge the stage's output into ``plan.target`` (main process only: it reads from disk)."""
    base = None
    if ctx.lora:  # the adapter is merged into the model the stage started from
        dtype = ctx.save_dtype if ctx.merge_in_save_dtype else None
        base, _ = _load_start_model(plan, ctx, dtype)
    export_model(
        base=base,
        stage_output=plan.paths.final,
        save_dtype=ctx.save_dtype,
        tokenizer=plan.prepared.tokenizer,
        stop_token_ids=plan.prepared.stop_token_ids,
        out_dir=plan.target,
        provenance={**ctx.provenance, "stages": stage_names},
        code_dir=ctx.code_dir,
    )
    del base
    free_memory()

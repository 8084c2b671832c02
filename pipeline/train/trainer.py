"""The training engine: preflight, the recipe's stages with TRL, export one merged model.

``train()`` reads the data, checks the run directory, runs preflight, then hands each stage
(SFT, DPO, GRPO, SDPO: those the recipe has, in its order) to the shared stage runner
(``trl_stages.py``); each stage starts from the merged model of the one before. The run
directory's layout is in ``run_dir.py``.

Retrying the same release with ``resume=True`` continues from the last complete checkpoint,
skips finished stages, and returns the stored result when the run had already finished. A run
directory is tied to one recipe and one base model: resuming it with another is refused.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.train.data import (
    file_sha256,
    load_chat_rows,
    load_preference_rows,
    load_rubric_tasks,
    rubric_rows,
)
from pipeline.train.preflight import PreflightReport, Prepared, run_preflight
from pipeline.train.recipe import Recipe, load_recipe
from pipeline.train.results import ProgressHook, StageResult, TrainResult
from pipeline.train.run_dir import RunDir, RunIdentity, fingerprint
from pipeline.train.trl_stages import StageContext, StagePlan, is_main_process, run_stage
from uptake.errors import InputError

if TYPE_CHECKING:
    from pipeline.eval.suite import Task
    from uptake.settings import JudgeSettings

log = logging.getLogger(__name__)

# Merge LoRA in fp32 up to this size; above it, in the checkpoint's own (16-bit) dtype.
FP32_MERGE_MAX_PARAMS = 8_000_000_000


@dataclass(frozen=True)
class StageData:
    """The training rows of each stage (and an RL stage's rubric tasks), validated before any
    model is loaded; ``order``: the stages in the order they run."""

    rows: dict[str, list[dict[str, Any]]]
    tasks: dict[str, list[Task]]
    sha256: dict[str, str]
    order: list[str]


def load_stage_data(recipe: Recipe) -> StageData:
    """Data first: a bad line should cost seconds, not a model load."""
    rows: dict[str, list[dict[str, Any]]] = {}
    tasks: dict[str, list[Task]] = {}
    sha: dict[str, str] = {}
    order = recipe.stages.names()
    for name in order:
        stage = getattr(recipe.stages, name)
        sha[name] = file_sha256(stage.data)
        if name == "sft":
            rows[name] = load_chat_rows(stage.data)
        elif name == "dpo":
            rows[name] = load_preference_rows(stage.data)
        else:
            tasks[name] = load_rubric_tasks(stage.data, name)
            rows[name] = rubric_rows(tasks[name])
    return StageData(rows=rows, tasks=tasks, sha256=sha, order=order)


def _quiet() -> None:
    """The engine reports through the progress hook and logging, not through tqdm bars."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def _stage_context(
    recipe: Recipe,
    prepared: Prepared,
    identity: RunIdentity,
    base_dir: Path,
    resume: bool,
    on_progress: ProgressHook | None,
) -> StageContext:
    """Settings every stage shares, decided once from the recipe, preflight and hardware."""
    import torch

    from pipeline.train.merge import config_dtype

    report, hw = prepared.report, prepared.hardware
    bf16_lora = hw.device == "cuda" and recipe.lora is not None and hw.bf16
    return StageContext(
        recipe=recipe,
        report=report,
        hardware=hw,
        train_dtype=torch.bfloat16 if bf16_lora else torch.float32,
        save_dtype=config_dtype(prepared.config),
        merge_in_save_dtype=(report.num_parameters or 0) > FP32_MERGE_MAX_PARAMS,
        provenance={
            **identity.model_dump(mode="json"),
            "preflight_adapters": report.adapter_names,
            "lora": recipe.lora.model_dump() if recipe.lora else None,
        },
        code_dir=base_dir if report.trust_remote_code else None,
        resume=resume,
        on_progress=on_progress,
    )


def _reloaded_from(prepared: Prepared, model_dir: Path) -> Prepared:
    """``prepared`` with the tokenizer and config of an earlier stage's exported model, which a
    later stage starts from (an allow-listed remote-code base ships its code in that export)."""
    from transformers import AutoConfig, AutoTokenizer

    trust = prepared.report.trust_remote_code
    return Prepared(
        report=prepared.report,
        hardware=prepared.hardware,
        tokenizer=AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust),
        config=AutoConfig.from_pretrained(model_dir, trust_remote_code=trust),
        model_class=prepared.model_class,
        stop_token_ids=prepared.stop_token_ids,
    )


def _run_stages(
    run: RunDir, data: StageData, prepared: Prepared, ctx: StageContext
) -> list[StageResult]:
    """Each stage in order: the first from the adapted base, every later one from the merged
    model of the one before; the last one's merged model is the run's model."""
    stages: list[StageResult] = []
    start: Path | None = None
    stage_prepared = prepared
    for index, name in enumerate(data.order):
        paths = run.stage(name)
        target = run.model if index == len(data.order) - 1 else paths.merged
        if start is not None:
            stage_prepared = _reloaded_from(prepared, start)
        plan = StagePlan(
            name,  # type: ignore[arg-type]  # names come from Stages.names(): StageName values
            data.rows[name],
            stage_prepared,
            start=start,
            target=target,
            paths=paths,
            tasks=tuple(data.tasks.get(name, ())),
        )
        stages.append(run_stage(plan, ctx, earlier=stages))
        start = target
    return stages


def _train_result(
    run: RunDir,
    recipe: Recipe,
    prepared: Prepared,
    data: StageData,
    stages: list[StageResult],
    wall_s: float,
) -> TrainResult:
    runtime = sum(s.train_runtime_s for s in stages)
    return TrainResult(
        model_dir=run.model,
        out_dir=run.root,
        steps=sum(s.steps for s in stages),
        tokens=sum(s.tokens for s in stages),
        tokens_per_s=sum(s.session_tokens for s in stages) / runtime if runtime > 0 else 0.0,
        final_loss=stages[-1].final_loss,
        wall_s=wall_s,
        resumed_from_step=next((s.resumed_from_step for s in stages if s.resumed_from_step), None),
        recipe_name=recipe.name,
        recipe_sha256=recipe.sha256,
        profile=recipe.profile or "cpu",
        stages=stages,
        preflight=prepared.report.model_dump(mode="json"),
        hardware=prepared.hardware.model_dump(mode="json"),
        data_sha256=data.sha256,
    )


def train(
    model_dir: str | Path,
    recipe: Recipe | str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    on_progress: ProgressHook | None = None,
    allowlist: Iterable[str] = (),
    repo_id: str | None = None,
    profile: str | None = None,
    on_preflight: Callable[[PreflightReport], None] | None = None,
    judge: JudgeSettings | None = None,
    judge_cache_dir: Path | None = None,
) -> TrainResult:
    """Post-train the base model in ``model_dir`` with ``recipe``; the merged model lands in
    ``out_dir/model``. ``on_progress`` receives a TrainProgress after every optimizer step;
    ``on_preflight`` the preflight report before training starts (also when it refuses).
    ``judge``: the track's judge for RL stages with judge criteria (verdicts cached in
    ``judge_cache_dir``, default: the stage's directory)."""
    started = time.perf_counter()
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    recipe = recipe.resolve(profile)
    base_dir = Path(model_dir).expanduser().resolve()
    if not (base_dir / "config.json").is_file():
        raise InputError(f"not a model directory (no config.json): {model_dir}")
    run = RunDir(out_dir)
    data = load_stage_data(recipe)
    identity = RunIdentity(
        recipe_name=recipe.name,
        recipe_sha256=recipe.sha256,
        base_model=str(base_dir),
        base_fingerprint=fingerprint(base_dir),
        repo_id=repo_id,
        profile=recipe.profile,
        data_sha256=data.sha256,
    )
    done = run.stored_result(identity, resume)
    if done is not None:
        log.info("run in %s already finished; returning its result", run.root)
        return done
    _quiet()

    prepared = run_preflight(base_dir, recipe, allowlist, repo_id=repo_id)
    if on_preflight is not None and is_main_process():
        on_preflight(prepared.report)
    # Before anything is written: a refused model leaves no run directory.
    prepared.report.raise_if_refused()
    if is_main_process():
        run.start(identity, prepared.report.model_dump(mode="json"))

    ctx = _stage_context(recipe, prepared, identity, base_dir, resume, on_progress)
    ctx = dataclasses.replace(ctx, judge=judge, judge_cache_dir=judge_cache_dir)
    stages = _run_stages(run, data, prepared, ctx)
    result = _train_result(run, recipe, prepared, data, stages, time.perf_counter() - started)
    if is_main_process():
        run.finish(result)
    return result

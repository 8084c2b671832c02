"""The training engine: preflight, SFT (then optional DPO) with TRL, export one merged model.

Layout of ``out_dir`` (the run directory of one release):

    run.json             identity: recipe sha, base model fingerprint, profile
    preflight.json       the PreflightReport
    sft/checkpoints/     TRL checkpoints (resume point after a crash)
    sft/final/           the stage's adapter (LoRA) or weights (full fine-tuning)
    sft/done.json        StageResult, written once the stage is complete
    sft/merged/          merged SFT model, only when a DPO stage follows
    dpo/...              same layout for the DPO stage
    model/               the merged, self-contained output model
    result.json          TrainResult

Retrying the same release with ``resume=True`` continues from the last complete checkpoint,
skips finished stages, and returns the stored result when the run had already finished. A run
directory is tied to one recipe and one base model: resuming it with another is refused.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.train.data import file_sha256, load_chat_rows, load_preference_rows, to_dataset
from pipeline.train.recipe import Recipe, load_recipe
from pipeline.train.results import ProgressHook, StageResult, TrainResult
from uptake.errors import InputError

if TYPE_CHECKING:
    from pipeline.train.preflight import PreflightReport

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
RESULT_FILE = "result.json"
DONE_FILE = "done.json"
# Merge LoRA in fp32 up to this size; above it, in the checkpoint's own (16-bit) dtype.
FP32_MERGE_MAX_PARAMS = 8_000_000_000


def fingerprint(model_dir: Path) -> str:
    """Identity of a base model directory: its config, tokenizer files and weight file sizes."""
    digest = hashlib.sha256()
    for name in ("config.json", "tokenizer_config.json", "tokenizer.json", "chat_template.jinja"):
        path = model_dir / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    for path in sorted(model_dir.glob("*.safetensors")):
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return digest.hexdigest()


def last_checkpoint(checkpoint_dir: Path) -> Path | None:
    """Newest *complete* checkpoint: ``trainer_state.json`` is written last, so a process killed
    mid-save leaves a directory without it, which must not be resumed from."""
    if not checkpoint_dir.is_dir():
        return None
    complete = [
        p
        for p in checkpoint_dir.glob("checkpoint-*")
        if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()
    ]
    return max(complete, key=lambda p: int(p.name.split("-")[-1]), default=None)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _finished(out: Path, identity: dict[str, Any], resume: bool) -> TrainResult | None:
    """Check ``out`` may hold this (recipe, base model) run; the stored result if it finished."""
    existing = _read_json(out / RUN_FILE)
    if existing is None:
        if out.exists() and any(out.iterdir()) and not resume:
            raise InputError(f"output directory is not empty: {out}")
        return None
    if not resume:
        raise InputError(
            f"{out} already holds a training run; pass --resume to continue it, or use an "
            "empty directory"
        )
    checks = {"recipe_sha256": "recipe", "base_fingerprint": "base model", "data_sha256": "data"}
    for key, what in checks.items():
        if existing.get(key) != identity[key]:
            raise InputError(
                f"cannot resume {out}: it was started with a different {what} "
                f"({str(existing.get(key))[:40]} != {str(identity[key])[:40]})"
            )
    stored = _read_json(out / RESULT_FILE)
    if stored is not None and (out / "model" / "config.json").is_file():
        return TrainResult.model_validate(stored)
    return None


def _quiet() -> None:
    """The engine reports through the progress hook and logging, not through tqdm bars."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def _barrier() -> None:
    from accelerate import PartialState

    PartialState().wait_for_everyone()


def _free() -> None:
    """Return memory of models the caller has just ``del``-ed (the next stage needs it)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _Stage:
    """Paths and bookkeeping of one stage inside the run directory."""

    def __init__(self, out: Path, name: str) -> None:
        self.name = name
        self.dir = out / name
        self.checkpoints = self.dir / "checkpoints"
        self.final = self.dir / "final"
        self.done = self.dir / DONE_FILE

    def stored(self) -> StageResult | None:
        data = _read_json(self.done)
        if data is None or not self.final.is_dir():
            return None
        return StageResult.model_validate(data)


def _run_trainer(trainer: Any, stage: _Stage, callback: Any, resume: bool) -> StageResult:
    """Train (resuming from the last complete checkpoint if asked), save the stage output."""
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    ckpt = last_checkpoint(stage.checkpoints) if resume else None
    resumed_step = tokens_before = None
    if ckpt is not None:
        state = _read_json(ckpt / "trainer_state.json") or {}
        resumed_step = int(state.get("global_step", 0))
        tokens_before = int(state.get("num_input_tokens_seen", 0))
        log.info("%s: resuming from %s (step %s)", stage.name, ckpt, resumed_step)
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
    )
    if _is_main_process():
        _write_json(stage.done, result.model_dump(mode="json"))
    return result


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
) -> TrainResult:
    """Post-train the base model in ``model_dir`` with ``recipe``; the merged model lands in
    ``out_dir/model``. ``on_progress`` receives a TrainProgress after every optimizer step;
    ``on_preflight`` the preflight report before training starts (also when it refuses)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, set_seed
    from trl import DPOTrainer, SFTTrainer

    from pipeline.train.config import dpo_config, lora_config, sft_config
    from pipeline.train.merge import config_dtype, export_model
    from pipeline.train.preflight import Prepared, adapt_model, load_model, run_preflight
    from pipeline.train.progress import ProgressCallback

    started = time.perf_counter()
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    recipe = recipe.resolve(profile)  # type: ignore[arg-type]
    base_dir = Path(model_dir).expanduser().resolve()
    out = Path(out_dir).expanduser().resolve()
    if not (base_dir / "config.json").is_file():
        raise InputError(f"not a model directory (no config.json): {model_dir}")

    # Data first: a bad line should cost seconds, not a model load.
    sft_rows = load_chat_rows(recipe.stages.sft.data)
    dpo_stage = recipe.stages.dpo
    dpo_rows = load_preference_rows(dpo_stage.data) if dpo_stage is not None else None
    data_sha = {"sft": file_sha256(recipe.stages.sft.data)}
    if dpo_stage is not None:
        data_sha["dpo"] = file_sha256(dpo_stage.data)

    identity = {
        "recipe_name": recipe.name,
        "recipe_sha256": recipe.sha256,
        "base_model": str(base_dir),
        "base_fingerprint": fingerprint(base_dir),
        "repo_id": repo_id,
        "profile": recipe.profile,
        "data_sha256": data_sha,
    }
    done = _finished(out, identity, resume)
    if done is not None:
        log.info("run in %s already finished; returning its result", out)
        return done
    _quiet()

    prepared = run_preflight(base_dir, recipe, allowlist, repo_id=repo_id)
    report, hw = prepared.report, prepared.hardware
    if on_preflight is not None and _is_main_process():
        on_preflight(report)
    report.raise_if_refused()  # before anything is written: a refused model leaves no run dir
    if _is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        if not (out / RUN_FILE).is_file():
            _write_json(out / RUN_FILE, identity)
        _write_json(out / "preflight.json", report.model_dump(mode="json"))

    lora = recipe.lora is not None
    cuda = hw.device == "cuda"
    train_dtype = torch.bfloat16 if (cuda and lora and hw.bf16) else torch.float32
    big = (report.num_parameters or 0) > FP32_MERGE_MAX_PARAMS
    save_dtype = config_dtype(prepared.config)
    provenance = {
        **identity,
        "preflight_adapters": report.adapter_names,
        "lora": recipe.lora.model_dump() if recipe.lora else None,
    }
    code_dir = base_dir if report.trust_remote_code else None
    final_model = out / "model"
    stages: list[StageResult] = []

    def export(stage: _Stage, base_path: Path | None, target: Path) -> None:
        if not _is_main_process():
            return
        base = None
        if lora:
            base = load_model(prepared, dtype=save_dtype if big else None, model_dir=base_path)
            if base_path is None:
                adapt_model(base, prepared, recipe.seed)
        export_model(
            base=base,
            stage_output=stage.final,
            save_dtype=save_dtype,
            tokenizer=prepared.tokenizer,
            stop_token_ids=prepared.stop_token_ids,
            out_dir=target,
            provenance={**provenance, "stages": [s.name for s in stages]},
            code_dir=code_dir,
        )
        del base
        _free()

    # ------------------------------------------------------------------ SFT
    sft = _Stage(out, "sft")
    sft_target = final_model if dpo_stage is None else sft.dir / "merged"
    stored = sft.stored() if resume else None
    if stored is None:
        set_seed(recipe.seed)
        model = load_model(prepared, dtype=train_dtype)
        added_ids = adapt_model(model, prepared, recipe.seed)
        callback = ProgressCallback("sft", on_progress)
        trainer = SFTTrainer(
            model=model,
            args=sft_config(recipe, report, hw, sft.checkpoints),
            train_dataset=to_dataset(sft_rows),
            processing_class=prepared.tokenizer,
            peft_config=lora_config(recipe, added_ids, model),
            callbacks=[callback],
        )
        stored = _run_trainer(trainer, sft, callback, resume)
        del trainer, model, callback
        _free()
        _barrier()
    stages.append(stored)
    if not (sft_target / "config.json").is_file():
        export(sft, None, sft_target)
    _barrier()

    # ------------------------------------------------------------------ DPO
    if dpo_stage is not None and dpo_rows is not None:
        dpo = _Stage(out, "dpo")
        stage_prep = Prepared(
            report=report,
            hardware=hw,
            # an allow-listed remote-code base ships its code in the SFT output (code_dir)
            tokenizer=AutoTokenizer.from_pretrained(
                sft_target, trust_remote_code=report.trust_remote_code
            ),
            config=AutoConfig.from_pretrained(
                sft_target, trust_remote_code=report.trust_remote_code
            ),
            model_class=prepared.model_class,
            stop_token_ids=prepared.stop_token_ids,
        )
        stored_dpo = dpo.stored() if resume else None
        if stored_dpo is None:
            set_seed(recipe.seed)
            model = load_model(stage_prep, dtype=train_dtype, model_dir=sft_target)
            ref = None if lora else load_model(stage_prep, dtype=train_dtype, model_dir=sft_target)
            callback = ProgressCallback("dpo", on_progress)
            trainer = DPOTrainer(
                model=model,
                ref_model=ref,
                args=dpo_config(recipe, report, hw, dpo.checkpoints),
                train_dataset=to_dataset(dpo_rows),
                processing_class=stage_prep.tokenizer,
                peft_config=lora_config(recipe, []),
                callbacks=[callback],
            )
            stored_dpo = _run_trainer(trainer, dpo, callback, resume)
            del trainer, model, ref, callback
            _free()
            _barrier()
        stages.append(stored_dpo)
        prepared = stage_prep
        if not (final_model / "config.json").is_file():
            export(dpo, sft_target, final_model)
        _barrier()

    runtime = sum(s.train_runtime_s for s in stages)
    result = TrainResult(
        model_dir=final_model,
        out_dir=out,
        steps=sum(s.steps for s in stages),
        tokens=sum(s.tokens for s in stages),
        tokens_per_s=sum(s.session_tokens for s in stages) / runtime if runtime > 0 else 0.0,
        final_loss=stages[-1].final_loss,
        wall_s=time.perf_counter() - started,
        resumed_from_step=next((s.resumed_from_step for s in stages if s.resumed_from_step), None),
        recipe_name=recipe.name,
        recipe_sha256=recipe.sha256,
        profile=recipe.profile or "cpu",
        stages=stages,
        preflight=report.model_dump(mode="json"),
        hardware=hw.model_dump(mode="json"),
        data_sha256=data_sha,
    )
    if _is_main_process():
        _write_json(out / RESULT_FILE, result.model_dump(mode="json"))
    return result

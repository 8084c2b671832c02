"""Translate recipe + preflight + hardware into TRL configs (SFT, DPO, GRPO, SDPO, LoRA).

Kept separate from the trainer so the exact arguments TRL receives can be unit-tested and
compared with TRL's defaults (see bench/train.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.train.hardware import ResolvedHardware
from pipeline.train.preflight import PreflightReport
from pipeline.train.recipe import DPOStage, GRPOStage, Recipe, SDPOStage, SFTStage


def _common(
    stage: SFTStage | DPOStage | GRPOStage,
    recipe: Recipe,
    report: PreflightReport,
    hw: ResolvedHardware,
    output_dir: Path,
) -> dict[str, Any]:
    return {
        "output_dir": str(output_dir),
        "max_steps": stage.max_steps or -1,
        "num_train_epochs": stage.epochs,
        "per_device_train_batch_size": stage.batch_size,
        "gradient_accumulation_steps": stage.gradient_accumulation_steps,
        "learning_rate": stage.learning_rate,
        "lr_scheduler_type": stage.lr_scheduler,
        "warmup_steps": stage.warmup_ratio,  # a float < 1 is a ratio of the total steps
        "weight_decay": stage.weight_decay,
        "max_grad_norm": stage.max_grad_norm,
        "logging_steps": stage.logging_steps,
        "save_strategy": "steps",
        "save_steps": stage.save_steps,
        "save_total_limit": stage.save_total_limit,
        "seed": recipe.seed,
        "data_seed": recipe.seed,
        "bf16": hw.bf16,
        "fp16": False,
        "use_cpu": hw.device == "cpu",
        "optim": hw.optimizer,
        "gradient_checkpointing": report.gradient_checkpointing,
        "use_liger_kernel": hw.liger,
        "torch_compile": hw.torch_compile,
        "max_length": report.max_length,
        "include_num_input_tokens_seen": "non_padding",
        "report_to": [],  # the caller logs to MLflow with pipeline.train.mlflow_log
        "disable_tqdm": True,
        "dataloader_num_workers": hw.dataloader_num_workers,
    }


def sft_config(
    recipe: Recipe, report: PreflightReport, hw: ResolvedHardware, output_dir: Path
):  # -> trl.SFTConfig
    from trl import SFTConfig

    stage = recipe.stages.sft
    assert stage is not None
    kwargs = _common(stage, recipe, report, hw, output_dir)
    grouped = stage.length_grouping and not report.packing
    kwargs.update(
        assistant_only_loss=stage.assistant_only_loss,
        packing=report.packing,
        packing_strategy="bfd",
        train_sampling_strategy="group_by_length" if grouped else "random",
    )
    return SFTConfig(**kwargs)


def dpo_config(
    recipe: Recipe, report: PreflightReport, hw: ResolvedHardware, output_dir: Path
):  # -> trl.DPOConfig
    from trl import DPOConfig

    stage = recipe.stages.dpo
    assert stage is not None
    kwargs = _common(stage, recipe, report, hw, output_dir)
    kwargs.update(beta=stage.beta, loss_type=[stage.loss_type])
    return DPOConfig(**kwargs)


def use_vllm(stage: GRPOStage, hw: ResolvedHardware) -> bool:
    """vLLM rollouts only on a GPU with vLLM installed (``auto``), or when the recipe says so."""
    if stage.use_vllm != "auto":
        return bool(stage.use_vllm)
    import importlib.util

    return hw.device == "cuda" and importlib.util.find_spec("vllm") is not None


def _rl_common(
    stage: GRPOStage,
    recipe: Recipe,
    report: PreflightReport,
    hw: ResolvedHardware,
    output_dir: Path,
) -> dict[str, Any]:
    """An RL stage's ``batch_size`` counts prompts; TRL's per-device batch counts completions."""
    kwargs = _common(stage, recipe, report, hw, output_dir)
    for key in ("max_length", "include_num_input_tokens_seen", "use_liger_kernel"):
        kwargs.pop(key)  # GRPO counts its own tokens; its liger loss is a different switch
    vllm = use_vllm(stage, hw)
    kwargs.update(
        per_device_train_batch_size=stage.batch_size * stage.num_generations,
        num_generations=stage.num_generations,
        max_completion_length=stage.max_new_tokens,
        temperature=stage.temperature,
        beta=stage.beta,
        use_vllm=vllm,
        mask_truncated_completions=False,  # a cut answer is graded as it is, like in evaluation
    )
    if vllm:
        kwargs["vllm_mode"] = "colocate"
    return kwargs


def grpo_config(
    recipe: Recipe, report: PreflightReport, hw: ResolvedHardware, output_dir: Path
):  # -> trl.GRPOConfig
    from trl import GRPOConfig

    stage = recipe.stages.grpo
    assert stage is not None
    return GRPOConfig(**_rl_common(stage, recipe, report, hw, output_dir), log_completions=False)


SUCCESS_THRESHOLD = 1.0  # weighted fraction passed (before the bonus): every criterion passed


def sdpo_config(
    recipe: Recipe, report: PreflightReport, hw: ResolvedHardware, output_dir: Path
):  # -> trl.experimental.sdpo.SDPOConfig
    from trl.experimental.sdpo import SDPOConfig

    stage: SDPOStage | None = recipe.stages.sdpo
    assert stage is not None
    return SDPOConfig(
        **_rl_common(stage, recipe, report, hw, output_dir), **sdpo_teacher_settings(stage)
    )


def sdpo_teacher_settings(stage: SDPOStage) -> dict[str, Any]:
    """What SDPO's teacher is shown: a successful rollout of the group when there is one (not
    the rollout itself), else the rollout's failed criteria (the reward's feedback)."""
    return {
        "max_prompt_length": None,
        "distillation_weight": stage.distillation_weight,
        "teacher_model_kind": stage.teacher,
        "feedback_template": stage.feedback_template,
        "include_environment_feedback": True,
        "environment_feedback_only_without_solution": True,
        "use_successful_as_teacher": True,
        "success_reward_threshold": SUCCESS_THRESHOLD,
        "dont_reprompt_on_self_success": True,
    }


def embedding_layout(model: Any) -> tuple[str, bool]:
    """(the input embedding's module name, whether the output head shares its weight)."""
    embed = model.get_input_embeddings()
    name = next(n for n, m in model.named_modules() if m is embed).rsplit(".", 1)[-1]
    head = model.get_output_embeddings()
    return name, head is not None and head.weight is embed.weight


def lora_config(
    recipe: Recipe, trainable_token_ids: list[int], model: Any = None
):  # -> peft.LoraConfig | None
    """LoRA on ``target_modules``; tokens preflight added (ChatML markers, pad) start untrained,
    so their embedding rows train too.

    Rows alone (``trainable_token_indices``) work when the output head has its own weight. With
    tied embeddings PEFT wraps the head as well, and TRL's fused LM head reads the head's base
    weight, so the rows would train on the input side only (and TRL fails on the wrapper); the
    whole embedding is then trained as a module to save, kept tied to the head.
    """
    if recipe.lora is None:
        return None
    from peft import LoraConfig

    spec = recipe.lora
    extra: dict[str, Any] = {}
    if trainable_token_ids:
        name, tied = embedding_layout(model) if model is not None else ("", False)
        if tied:
            extra = {"modules_to_save": [name], "ensure_weight_tying": True}
        else:
            extra = {"trainable_token_indices": list(trainable_token_ids)}
    return LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=spec.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
        **extra,
    )

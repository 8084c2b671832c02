"""Multi-GPU: re-run ``uptake train`` under ``accelerate launch`` with FSDP.

Distributed training is accelerate's job, not ours: the CLI builds one ``accelerate launch``
command line (FSDP2, transformer-layer wrapping from the model's ``_no_split_modules``, full
state dict so the stage output is an ordinary model/adapter directory) and each rank runs the
same ``uptake train``. A rank knows it was launched by the ``LOCAL_RANK`` variable and trains
in-process; only the main process writes results and exports the merged model.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def launched() -> bool:
    """True inside a process started by accelerate/torchrun."""
    return "LOCAL_RANK" in os.environ


def needs_launch(num_processes: int) -> bool:
    return num_processes > 1 and not launched()


def accelerate_command(
    *,
    num_processes: int,
    model: Path,
    recipe: Path,
    out: Path,
    recipe_origin: Path | None = None,
    resume: bool = False,
    profile: str | None = None,
    repo_id: str | None = None,
    config: Path | None = None,
    mixed_precision: str = "bf16",
    mlflow: bool = False,
    run_id: str | None = None,
    progress_file: Path | None = None,
    halve_batch: bool = False,
) -> list[str]:
    """The exact command the CLI runs for ``--num-processes N`` (N > 1)."""
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        mixed_precision,
        "--use_fsdp",
        "--fsdp_version",
        "2",
        "--fsdp_auto_wrap_policy",
        "TRANSFORMER_BASED_WRAP",
        "--fsdp_state_dict_type",
        "FULL_STATE_DICT",
        "--fsdp_cpu_ram_efficient_loading",
        "true",
        "--fsdp_reshard_after_forward",
        "true",
        "--fsdp_activation_checkpointing",
        "false",
        "-m",
        "uptake.cli",
        "train",
        "--model",
        str(model),
        "--recipe",
        str(recipe),
        "--out",
        str(out),
        "--num-processes",
        str(num_processes),
    ]
    if recipe_origin is not None:
        cmd += ["--recipe-origin", str(recipe_origin)]
    if resume:
        cmd.append("--resume")
    if profile:
        cmd += ["--profile", profile]
    if repo_id:
        cmd += ["--repo-id", repo_id]
    if config is not None:  # every rank reads the same settings (the allow-list, say)
        cmd += ["--config", str(config)]
    if mlflow:
        cmd.append("--mlflow")
    if run_id:
        cmd += ["--run-id", run_id]
    if progress_file is not None:
        cmd += ["--progress-file", str(progress_file)]
    if halve_batch:
        cmd.append("--halve-batch")
    return cmd

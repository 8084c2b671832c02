"""The ``worker:`` settings section: how the pipeline worker runs its jobs.

In the core (not in ``pipeline/``) because ``uptake status`` and ``uptake up`` read it too, and
``uptake/`` imports no service package. Durations are ``_s`` numbers (uptake.config_model).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from uptake.config_model import ConfigModel
from uptake.cost import MAX_PRICE


class WorkerSettings(ConfigModel):
    """Stage and job limits, leases, retries and the device of ``uptake worker``."""

    experiment: str = Field(
        "uptake-pipeline", min_length=1, description="MLflow experiment of the job runs."
    )
    stage_timeout_s: float = Field(
        12 * 3600.0, gt=0, description="Seconds a stage may run; then the job fails (`deadline`)."
    )
    job_deadline_s: float = Field(
        24 * 3600.0, gt=0, description="Seconds the whole job may take, lease waits included."
    )
    lease_ttl_s: float = Field(
        120.0, gt=0, description="Seconds after its last heartbeat that a job's lease lapses."
    )
    heartbeat_s: float = Field(
        20.0, gt=0, description="Seconds between lease renewals (at most a third of the TTL)."
    )
    transient_retries: int = Field(
        3, ge=0, description="Retries per stage after a download error or an MLflow outage."
    )
    retry_backoff_s: float = Field(
        2.0, ge=0, description="Seconds before the first retry; doubled each retry."
    )
    retry_backoff_max_s: float = Field(60.0, gt=0, description="Cap of that backoff, seconds.")
    device: Literal["auto", "cpu"] = Field(
        "auto", description="`cpu`: the jobs never use a GPU (tests, the demo)."
    )
    gpus: str | None = Field(
        None,
        pattern=r"^\d+(,\d+)*$",
        description="`CUDA_VISIBLE_DEVICES` of the jobs, e.g. `0,1` (as `--gpus`); null: as is.",
    )
    eval_batch_size: int = Field(16, ge=1, description="Prompts generated at once in evaluation.")
    eval_max_new_tokens: int | None = Field(
        None, ge=1, description="Cap on generated tokens per answer; null: the suite's limits."
    )
    progress_interval_s: float = Field(
        2.0, ge=0, description="Least seconds between two `run.stage` events of a job."
    )
    preload: bool = Field(
        True,
        description="Fork jobs from a server that imported torch & co. once; false: spawn each.",
    )
    cpu_hour_price: float | None = Field(
        None,
        ge=0,
        le=MAX_PRICE,
        description="Price of an hour of the machine when a job evaluates on its CPU: each run "
        "logs `cost_per_task` from it and the measured generation time (the report's "
        "quality-cost chart); null: tokens and time only.",
    )
    gpu_hour_price: float | None = Field(
        None,
        ge=0,
        le=MAX_PRICE,
        description="Price of a GPU hour when a job evaluates on a GPU: as `cpu_hour_price`.",
    )
    # -- disk (docs/worker.md "Disk"): applied after every job and by `uptake gc` -----------
    keep_snapshots: int = Field(
        3,
        ge=0,
        description="Fetched releases kept under `<state>/models` (the newest; any an unfinished "
        "job uses is kept too): a redelivery or another track reuses them.",
    )
    keep_baselines: int = Field(
        20,
        ge=0,
        description="Releases whose baseline scores are kept under `<state>/baselines` (the "
        "newest).",
    )
    keep_registered_jobs: bool = Field(
        False,
        description="Keep a job's folder (checkpoints, merged model) after its version is "
        "registered; false: drop it, MLflow holds the model.",
    )
    keep_unfinished_job_days: float = Field(
        14.0,
        gt=0,
        description="Days an unfinished job's folder (its checkpoints, for a resume) is kept "
        "after its last write.",
    )
    min_free_gb: float = Field(
        10.0,
        ge=0,
        description="Free space (GB) the state dir's disk needs before a job starts; below it "
        "(after retention) the job is refused as retryable, reason `disk_full`; 0: no floor.",
    )

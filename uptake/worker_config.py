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

    experiment: str = Field("uptake-pipeline", min_length=1)  # MLflow experiment of job runs
    # a stage still running after this is stopped (the job fails with reason ``deadline``)
    stage_timeout_s: float = Field(12 * 3600.0, gt=0)
    job_deadline_s: float = Field(24 * 3600.0, gt=0)  # the whole job, waiting for a lease too
    # a key's lease (owner + heartbeat on its MLflow run) lapses this long after its last beat
    lease_ttl_s: float = Field(120.0, gt=0)
    heartbeat_s: float = Field(20.0, gt=0)  # how often a holder renews its lease
    transient_retries: int = Field(3, ge=0)  # per stage, for a download error or MLflow outage
    retry_backoff_s: float = Field(2.0, ge=0)  # first wait; doubles each retry
    retry_backoff_max_s: float = Field(60.0, gt=0)
    device: Literal["auto", "cpu"] = "auto"  # "cpu": never use a GPU (tests, the demo)
    gpus: str | None = Field(None, pattern=r"^\d+(,\d+)*$")  # pins CUDA_VISIBLE_DEVICES
    eval_batch_size: int = Field(16, ge=1)
    eval_max_new_tokens: int | None = Field(None, ge=1)  # None: the suite's own limits
    progress_interval_s: float = Field(2.0, ge=0)  # least time between two run.stage events
    # fork each job from a server that imported torch/transformers/TRL/MLflow once at start
    # (uptake.bus.jobs.preloaded_context); False: spawn each job afresh
    preload: bool = True
    cpu_hour_price: float | None = Field(
        None,
        ge=0,
        le=MAX_PRICE,
        description="Price of an hour of the machine when a job evaluates on its CPU (no GPU): "
        "each run logs cost_per_task from it and the measured generation time, so the report "
        'draws it on the quality-cost chart (docs/evaluation.md "Cost"). None: tokens and '
        "time only.",
    )
    gpu_hour_price: float | None = Field(
        None,
        ge=0,
        le=MAX_PRICE,
        description="Price of a GPU hour when a job evaluates on a GPU: as cpu_hour_price.",
    )

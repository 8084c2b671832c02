"""The worker's section of ``uptake status``: jobs in progress and recent failures.

MLflow is the record (each job's run carries its track, release, current stage, lease and
failure as tags, written by the job engine); the tail of the runs topic adds what only the
events carry: the step, total and ETA of the latest ``run.stage`` of each job. A job whose run
is still open but whose lease lapsed has no live worker: it shows as ``stalled`` (the next
delivery of its release resumes it).
"""

from __future__ import annotations

import time
from typing import Any

from pipeline.worker.progress_board import TrackProgress
from pipeline.worker.tags import (
    FAILURE_RETRYABLE_TAG,
    FAILURE_TAG,
    LEASE_EXPIRES_TAG,
    LEASE_OWNER_TAG,
    REGISTERED_VERSION_TAG,
    STAGE_TAG,
)
from uptake.events import EventDecodeError, RunStage, decode_event
from uptake.mlflow_contract import RELEASE_ID_TAG, TRACK_TAG
from uptake.settings import Settings
from uptake.stack.local import resolved_endpoints
from uptake.stack.probes import mlflow_healthy
from uptake.status import StatusSection

RECENT_RUNS = 50  # runs looked at: the newest of the worker's experiment
TAIL_RECORDS = 500  # per partition of the runs topic, for the latest progress of each job


def _latest_progress(
    bootstrap: str, topic: str, timeout_s: float
) -> dict[tuple[str, str | None], RunStage]:
    """The last ``run.stage`` of each (release id, track) in the tail of the runs topic."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        client_id="uptake-status-worker",
        request_timeout_ms=int(timeout_s * 1000) + 1000,
    )
    latest: dict[tuple[str, str | None], RunStage] = {}
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return latest
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        starts = consumer.beginning_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(starts[tp], ends[tp] - TAIL_RECORDS))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(consumer.position(tp) < ends[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    try:
                        event = decode_event(record.value)
                    except EventDecodeError:
                        continue
                    if isinstance(event, RunStage):
                        latest[(event.release_id, event.track)] = event
    finally:
        consumer.close()
    return latest


def _row_of(run: Any, progress: dict[tuple[str, str | None], RunStage], now: float) -> dict:
    tags = run.data.tags
    release, track = tags.get(RELEASE_ID_TAG, "?"), tags.get(TRACK_TAG)
    row = TrackProgress(track or "?", stage=tags.get(STAGE_TAG, "-"))
    if REGISTERED_VERSION_TAG in tags:
        row.state = "registered"
        row.detail = f"v{tags[REGISTERED_VERSION_TAG]}"
    elif FAILURE_TAG in tags:
        row.state = "failed"
        retry = tags.get(FAILURE_RETRYABLE_TAG) == "true"
        row.detail = tags[FAILURE_TAG] + (" (retryable)" if retry else "")
    elif run.info.status == "RUNNING":
        try:
            expires = float(tags.get(LEASE_EXPIRES_TAG, "nan"))
        except ValueError:
            expires = float("nan")
        live = expires == expires and expires > now  # NaN: no lease yet
        row.state = "running" if live else "stalled"
        row.detail = f"on {tags.get(LEASE_OWNER_TAG, '?')}" if live else "no live lease"
        seen = progress.get((release, track))
        if live and seen is not None:
            row.stage = seen.stage
            row.step, row.total_steps = seen.step, seen.total_steps
            row.tokens_per_s, row.eta_s = seen.tokens_per_s, seen.eta_s
    else:
        row.state = run.info.status.lower()
    return {
        "release_id": release,
        "track": row.track,
        "state": row.state,
        "stage": row.stage,
        "progress": row.progress(),
        "eta": row.eta(),
        "eta_s": row.eta_s,
        "detail": row.detail,
        "run_id": run.info.run_id,
        "started_at": run.info.start_time,
    }


def worker_status(settings: Settings, timeout_s: float = 3.0) -> StatusSection:
    """Jobs in progress (track, stage, progress, ETA) and recent failures with reasons."""
    bootstrap, tracking = resolved_endpoints(settings)
    section = StatusSection(
        name="worker",
        title="worker: jobs in progress and recent failures",
        columns=["release", "track", "state", "stage", "progress", "ETA", "detail"],
    )
    if not settings.tracks:
        section.title = "worker: no tracks configured (not running)"
        section.data = {"in_progress": [], "failures": [], "tracks": []}
        return section
    if not mlflow_healthy(tracking, timeout_s):
        section.error = f"MLflow not reachable at {tracking}"
        return section
    from mlflow import MlflowClient

    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(settings.worker.experiment)
    runs = (
        client.search_runs(
            [experiment.experiment_id], order_by=["start_time DESC"], max_results=RECENT_RUNS
        )
        if experiment is not None
        else []
    )
    try:
        progress = _latest_progress(bootstrap, settings.kafka.topics.runs, timeout_s)
    except Exception:  # the broker down: MLflow still says what runs and what failed
        progress = {}
    rows = [_row_of(run, progress, time.time()) for run in runs]
    in_progress = [r for r in rows if r["state"] in ("running", "stalled")]
    failures = [r for r in rows if r["state"] == "failed"][: settings.watcher.status_limit]
    for r in [*in_progress, *failures]:
        section.rows.append(
            [
                r["release_id"],
                r["track"],
                r["state"],
                r["stage"],
                r["progress"],
                r["eta"],
                r["detail"][:120],
            ]
        )
    section.data = {
        "in_progress": in_progress,
        "failures": failures,
        "tracks": [t.name for t in settings.tracks],
    }
    return section

"""The approval worker: acts on webhook hints at once and reconciles periodically.

Webhook delivery is best effort (the promoter may be down, MLflow gives up after retries),
so every ``reconcile_interval_s`` the worker also looks at each managed model in MLflow:
pending candidates whose ``approval`` tag now says approved/rejected are decided, promotions
interrupted by a crash are finished, unpublished events are sent and the history mirror is
completed. All deciding happens on this one thread (plus the Kafka consumer's, serialised
by the per-model lock).
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable

from mlflow.entities.model_registry import ModelVersion

from registry import audit
from registry.context import Context
from registry.decision_flow import Candidate, decide_once, handle_approval, resume
from registry.enact import record_change
from registry.managed import managed_models
from uptake.mlflow_contract import (
    APPROVAL_TAG,
    APPROVAL_VERDICTS,
    DECISION_TAG,
    HISTORY_TAG_PREFIX,
    RELEASE_ID_TAG,
)

log = logging.getLogger(__name__)


def reconciled_models(ctx: Context) -> list[str]:
    """The managed models (``registry.managed``) and every model decided on before (its
    pending approvals and interrupted promotions are still finished)."""
    return sorted({*managed_models(ctx.settings), *ctx.store.known_models()})


def reconcile_model(ctx: Context, model: str) -> int:
    """One pass over ``model``; returns how many approvals were decided."""
    for _, version in ctx.store.candidates_in("promoting", model):
        with ctx.locks.hold(model):
            resume(ctx, model, version)
    record_outside_move(ctx, model)
    versions = ctx.registry.versions(model)
    pending = set(ctx.store.candidates_in("pending_approval", model))
    for mv in versions:
        tags = mv.tags or {}
        key = (model, str(mv.version))
        # marked pending in MLflow but unknown here (a fresh state store): adopt it
        if (
            tags.get(DECISION_TAG) == "pending_approval"
            and key not in pending
            and ctx.store.candidate_state(model, str(mv.version)) is None
        ):
            with ctx.store.engine.begin() as conn:
                ctx.store.set_state(
                    conn,
                    model,
                    str(mv.version),
                    "pending_approval",
                    release_id=tags.get(RELEASE_ID_TAG),
                    run_id=mv.run_id,
                )
            pending.add(key)
    decided = 0
    for mv in versions:
        key = (model, str(mv.version))
        verdict = (mv.tags or {}).get(APPROVAL_TAG)
        if (
            key in pending
            and verdict in APPROVAL_VERDICTS
            and handle_approval(ctx, model, str(mv.version), source="reconcile") is not None
        ):
            decided += 1
    adopt_undecided(ctx, model, versions)
    sync_mirror(ctx, model)
    return decided


def adopt_undecided(ctx: Context, model: str, versions: list[ModelVersion]) -> int:
    """Decide versions the worker registered whose ``candidate.registered`` never arrived
    (or ended in the DLQ while MLflow was down): MLflow is the system of record."""
    after = ctx.settings.registry.adopt_after_s
    if after is None or model not in managed_models(ctx.settings):
        return 0
    adopted = 0
    now_ms = time.time() * 1000
    for mv in versions:
        tags = mv.tags or {}
        release = tags.get(RELEASE_ID_TAG)
        if not release or DECISION_TAG in tags:
            continue
        if now_ms - (mv.creation_timestamp or now_ms) < after * 1000:
            continue  # its event is probably still on its way
        version = str(mv.version)
        if ctx.store.decision(model, version, "gate") is not None:
            continue
        log.info("%s v%s was never decided; deciding it now", model, version)
        decide_once(ctx, Candidate(model, version, release, mv.run_id))
        adopted += 1
    return adopted


OUTSIDE = "outside-uptake"  # decided_by of a champion change uptake did not make itself


def record_outside_move(ctx: Context, model: str) -> bool:
    """The ``champion`` alias points where the history does not: someone moved it in the
    MLflow UI or API, or a rollback died between moving it and writing history. Record the
    change and announce it, so serving follows and the audit trail stays complete.

    Runs under the model's lock and never while a promotion is being finished, so uptake's
    own alias moves (recorded in the same locked step) are never mistaken for outside ones.
    """
    with ctx.locks.hold(model):
        if ctx.store.candidates_in("promoting", model):
            return False
        current = ctx.registry.champion(model)
        last = audit.last(ctx.store.engine, model)
        recorded = last.version if last is not None else None
        if current is None or current == recorded:
            if current is None and recorded is not None:
                log.warning("%s: the champion alias was removed outside uptake", model)
            return False
        log.warning("%s: champion is v%s, history says v%s; recording it", model, current, recorded)
        record_change(
            ctx,
            model,
            current,
            recorded,
            reason="rollback",  # a person's override (or an interrupted rollback), not the gate
            decided_by=OUTSIDE,
            detail=f"champion alias moved from v{recorded} to v{current} outside uptake "
            "(MLflow UI/API, or a rollback interrupted before it was recorded)",
        )
        return True


def sync_mirror(ctx: Context, model: str) -> None:
    """Re-mirror history entries whose MLflow tag is missing (a failed mirror write)."""
    entries = audit.read(ctx.store.engine, model)
    if not entries:
        return
    present = set(ctx.registry.model_tags(model))
    for entry in entries:
        if f"{HISTORY_TAG_PREFIX}{entry.seq:04d}" not in present:
            audit.mirror_to_mlflow(ctx.registry, entry)


def reconcile_once(ctx: Context) -> int:
    decided = 0
    for model in reconciled_models(ctx):
        try:
            decided += reconcile_model(ctx, model)
        except Exception as exc:
            log.warning("reconciling %s failed: %s", model, exc)
    ctx.flush()
    return decided


class ApprovalWorker:
    """One thread: webhook hints from a queue, and a reconcile pass every interval."""

    def __init__(self, ctx: Context, interval_s: float) -> None:
        self.ctx = ctx
        self.interval_s = interval_s
        self.hints: queue.Queue[tuple[str, str]] = queue.Queue()
        self.passes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="uptake-approvals", daemon=True)

    def hint(self, model: str, version: str) -> None:
        self.hints.put((model, version))

    def start(self) -> ApprovalWorker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.hints.put(("", ""))
        self._thread.join(timeout=30)

    def _run(self) -> None:
        next_pass = time.monotonic()  # reconcile once right away (restart after downtime)
        while not self._stop.is_set():
            wait = max(0.0, next_pass - time.monotonic())
            try:
                model, version = self.hints.get(timeout=wait)
            except queue.Empty:
                model = ""
            if self._stop.is_set():
                return
            if model:
                self._safely(
                    functools.partial(handle_approval, self.ctx, model, version, "webhook")
                )
                self.ctx.flush()
                continue
            if time.monotonic() >= next_pass:
                self._safely(lambda: reconcile_once(self.ctx))
                self.passes += 1
                next_pass = time.monotonic() + self.interval_s

    @staticmethod
    def _safely(step: Callable[[], object]) -> None:
        try:
            step()
        except Exception:
            log.exception("approval worker step failed; the next reconcile pass retries")

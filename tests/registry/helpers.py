"""Test doubles for the pipeline worker and for on-call endpoints.

Tests register candidates through the worker's own registration code
(``pipeline.worker.register``): an MLflow run carrying what the evaluation engine logs (built
with its public API: ``eval_metrics`` names, the results JSONL of ``save_results``, the
``uptake.suite_sha`` tag), then ``register_candidate`` (an idempotent version with the
``challenger`` alias) and ``candidate_event`` (the ``candidate.registered`` it publishes).
The evaluation itself is scripted (scorecards), so the gate can be driven to each outcome.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag

from pipeline.eval import EvalResult, TaskResult, compute_metrics, eval_metrics, save_results
from pipeline.worker.job_spec import JobKey
from pipeline.worker.register import candidate_event, register_candidate
from tests.waiting import wait_for  # noqa: F401  (re-exported: the registry tests import it here)
from uptake.events import CandidateRegistered, release_id
from uptake.mlflow_contract import (
    BASE_MODEL_TAG,
    BASE_REVISION_TAG,
    BASELINE_RESULTS_FILE,
    EVAL_ARTIFACT_DIR,
    RECIPE_SHA_TAG,
    RELEASE_ID_TAG,
    RESULTS_FILE,
    SUITE_SHA_TAG,
)

CRITERIA = 3

# A scorecard: practice area -> criteria passed per task (out of CRITERIA).
Card = dict[str, list[int]]

# (all-pass rate / criterion pass rate)
BASE: Card = {"immigration": [3, 1, 1, 0, 0], "tax": [3, 2, 1, 0, 0]}  # 0.2 / 0.367
GOOD: Card = {"immigration": [3, 3, 2, 1, 0], "tax": [3, 3, 2, 1, 1]}  # 0.4 / 0.633
BETTER: Card = {"immigration": [3, 3, 3, 2, 1], "tax": [3, 3, 3, 2, 1]}  # 0.6 / 0.8
# better all-pass than GOOD but worse criterion pass rate: better on one metric only
SPIKY: Card = {"immigration": [3, 3, 3, 0, 0], "tax": [3, 3, 0, 0, 0]}  # 0.5 / 0.5


def eval_result(card: Card, model: str, suite_sha: str) -> EvalResult:
    tasks = []
    for area, passes in card.items():
        for i, passed in enumerate(passes):
            tasks.append(
                TaskResult(
                    task_id=f"{area}-{i:03d}",
                    practice_area=area,
                    messages=[{"role": "user", "content": f"question {area} {i}"}],
                    response="answer",
                    criteria=[
                        {
                            "id": f"c{k}",
                            "description": f"criterion {k}",
                            "type": "contains",
                            "passed": k < passed,
                            "reason": "ok" if k < passed else "missing",
                        }
                        for k in range(CRITERIA)
                    ],
                )
            )
    return EvalResult(
        model=model,
        backend="test",
        suite_name="legal",
        suite_sha256=suite_sha,
        tasks=tasks,
        metrics=compute_metrics(tasks, n_boot=200),
    )


def rates(card: Card) -> tuple[float, float]:
    passes = [p for ps in card.values() for p in ps]
    return (
        sum(p == CRITERIA for p in passes) / len(passes),
        sum(passes) / (CRITERIA * len(passes)),
    )


@dataclass
class Worker:
    """Registers evaluated candidates in MLflow like the pipeline worker will."""

    tracking_uri: str
    experiment: str = field(default_factory=lambda: f"uptake-test-{uuid.uuid4().hex[:8]}")

    def __post_init__(self) -> None:
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        self.experiment_id = self.client.create_experiment(self.experiment)

    def register(
        self,
        model: str,
        card: Card,
        base: Card | None = BASE,
        suite_sha: str = "s" * 64,
        revision: str | None = None,
        *,
        log_metrics: bool = True,
        repo: str = "acme/base",
    ) -> CandidateRegistered:
        """Log the evaluation to a run (its metrics only with ``log_metrics``), register a
        version from it, and return the ``candidate.registered`` the worker would publish
        (which carries the scores even when the run lacks them)."""
        revision = revision or uuid.uuid4().hex[:12]
        rid = release_id("hf", repo, revision)
        result = eval_result(card, f"{repo}@{revision}+uptake", suite_sha)
        baseline = eval_result(base, f"{repo}@{revision}", suite_sha) if base else None
        run = self.client.create_run(self.experiment_id, run_name=revision)
        run_id = run.info.run_id
        tags = {
            RELEASE_ID_TAG: rid,
            BASE_MODEL_TAG: repo,
            BASE_REVISION_TAG: revision,
            RECIPE_SHA_TAG: "r" * 64,
            SUITE_SHA_TAG: suite_sha,
        }
        now = int(time.time() * 1000)
        metrics = eval_metrics(result, baseline)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in metrics.items()] if log_metrics else [],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        with tempfile.TemporaryDirectory() as tmp:
            save_results(result, Path(tmp) / RESULTS_FILE)
            if baseline is not None:
                save_results(baseline, Path(tmp) / BASELINE_RESULTS_FILE)
            self.client.log_artifacts(run_id, tmp, EVAL_ARTIFACT_DIR)
        self.client.set_terminated(run_id)
        key = JobKey(release_id=rid, track="legal", recipe_sha="r" * 64, suite_sha=suite_sha)
        mv, _created = register_candidate(
            self.client, model, run_id, key.digest, {RELEASE_ID_TAG: rid}
        )
        return candidate_event(
            mv, model, run_id, metrics, release_id=rid, suite_sha=suite_sha, producer="test-worker"
        )


# --- loopback HTTP receivers (Slack, PagerDuty, generic webhook) ----------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Endpoint:
    """A loopback HTTP endpoint that records POSTs and answers from a script of statuses."""

    def __init__(self, statuses: list[int] | None = None, default: int = 200) -> None:
        self.received: list[Received] = []
        self.statuses = list(statuses or [])
        self.default = default
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with owner.lock:
                    owner.received.append(Received(self.path, dict(self.headers.items()), body))
                    status = owner.statuses.pop(0) if owner.statuses else owner.default
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": "success"}' if status < 300 else b'{"error": "x"}')

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Endpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bodies(self) -> list[Any]:
        with self.lock:
            return [r.json() for r in self.received]

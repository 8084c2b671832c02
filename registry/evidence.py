"""What the gate knows about one model version, read from its MLflow run.

The evaluation engine logs (docs/evaluation.md): tag ``uptake.suite_sha``; metrics
``all_pass_rate``, ``criterion_pass_rate``, per practice area ``all_pass_rate.<area>`` (with
``.ci_low``/``.ci_high`` companions), the base model's as ``baseline.*``; and the per-task
results JSONL as the artifact ``eval/results.jsonl`` (``eval/baseline_results.jsonl`` for the
base). Those names are the contract this module reads; nothing from ``pipeline`` is imported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

SUITE_SHA_TAG = "uptake.suite_sha"
RELEASE_ID_TAG = "uptake.release_id"
RESULTS_ARTIFACT = "eval/results.jsonl"
BASE_RESULTS_ARTIFACT = "eval/baseline_results.jsonl"
ALL_PASS = "all_pass_rate"
CRITERION = "criterion_pass_rate"
BASE_PREFIX = "baseline."
_CI_SUFFIXES = (".ci_low", ".ci_high")


class TaskOutcome(BaseModel):
    """One task's verdicts, reduced to what a paired test needs."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    practice_area: str
    n_passed: int
    n_criteria: int


class Evidence(BaseModel):
    """A version's scores on one suite, as logged to its run (None where not logged)."""

    registered_model: str
    version: str
    run_id: str | None = None
    release_id: str | None = None
    model_uri: str
    suite_sha: str | None = None
    all_pass_rate: float | None = None
    criterion_pass_rate: float | None = None
    area_all_pass: dict[str, float] = {}
    base_all_pass_rate: float | None = None
    base_criterion_pass_rate: float | None = None


def area_rates(metrics: Mapping[str, float], prefix: str = "") -> dict[str, float]:
    """Per-practice-area all-pass rates from ``<prefix>all_pass_rate.<area>`` metric names."""
    head = f"{prefix}{ALL_PASS}."
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if not key.startswith(head) or key.endswith(_CI_SUFFIXES):
            continue
        area = key[len(head) :]
        if area in ("ci_low", "ci_high") or not area:
            continue
        out[area] = float(value)
    return out


def evidence_from_run(
    registered_model: str,
    version: str,
    model_uri: str,
    run_id: str | None,
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
) -> Evidence:
    def metric(name: str) -> float | None:
        value = metrics.get(name)
        return float(value) if value is not None else None

    return Evidence(
        registered_model=registered_model,
        version=version,
        run_id=run_id,
        release_id=tags.get(RELEASE_ID_TAG),
        model_uri=model_uri,
        suite_sha=tags.get(SUITE_SHA_TAG),
        all_pass_rate=metric(ALL_PASS),
        criterion_pass_rate=metric(CRITERION),
        area_all_pass=area_rates(metrics),
        base_all_pass_rate=metric(BASE_PREFIX + ALL_PASS),
        base_criterion_pass_rate=metric(BASE_PREFIX + CRITERION),
    )


def parse_results_jsonl(text: str) -> list[TaskOutcome]:
    """Per-task outcomes from the eval engine's results JSONL (rows carry ``criteria``)."""
    out: list[TaskOutcome] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            criteria = row["criteria"]
            out.append(
                TaskOutcome(
                    task_id=str(row["task_id"]),
                    practice_area=str(row.get("practice_area", "")),
                    n_passed=sum(1 for c in criteria if c.get("passed")),
                    n_criteria=len(criteria),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"results line {number}: {type(exc).__name__}: {exc}") from None
    return out

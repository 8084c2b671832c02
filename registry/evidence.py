"""Step 1 of a decision, gather: everything the gate needs about a candidate, read once.

A decision reads MLflow at the moment of deciding (an approval given hours later is judged
against the champion of *now*): the candidate's run, the current champion's run, the base
model's scores logged with the candidate, and — only when the gate tests significance — the
per-task results of the candidate and its comparator. ``gather`` returns them as one
``Case``; the gate (step 2) judges it without touching MLflow. The names read are those of
``uptake.mlflow_contract``, which the evaluation engine writes.

MLflow is the only source (DESIGN.md "Trust"): a ``candidate.registered`` event carries
numbers too, but anyone who can write the topic can forge them, so they are never used to
decide. ``event_differences`` compares them with MLflow; an event that disagrees is
dead-lettered with the differences (``EventMismatch``), and a run that lacks its metrics is
rejected by the gate (``candidate_scored``), never filled in from the event.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from mlflow.entities.model_registry import ModelVersion
from pydantic import BaseModel, ConfigDict

from registry.mlflow_registry import Registry
from uptake.errors import PermanentError
from uptake.events import CandidateRegistered
from uptake.mlflow_contract import (
    ALL_PASS_RATE,
    BASELINE_PREFIX,
    BASELINE_RESULTS_ARTIFACT,
    CI_SUFFIXES,
    CRITERION_PASS_RATE,
    RELEASE_ID_TAG,
    RESULTS_ARTIFACT,
    SUITE_SHA_TAG,
    UPTAKE_TAG_PREFIX,
    area_from_metric_key,
)


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


class TaskOutcomes(BaseModel):
    """Per-task results of the comparator (champion, else the base model) and the candidate."""

    comparator: list[TaskOutcome]
    candidate: list[TaskOutcome]


class Case(BaseModel):
    """What the gate judges: the candidate, the champion of now, and per-task outcomes."""

    candidate: Evidence
    champion: Evidence | None
    # None: not gathered (no significance test configured); str: why they are unavailable
    task_outcomes: TaskOutcomes | str | None = None


def area_rates(metrics: Mapping[str, float], prefix: str = "") -> dict[str, float]:
    """Per-practice-area all-pass rates (by area name) from ``<prefix>all_pass_rate.<key>``."""
    head = f"{prefix}{ALL_PASS_RATE}."
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if not name.startswith(head) or name.endswith(CI_SUFFIXES):
            continue
        key = name[len(head) :]
        if not key or f".{key}" in CI_SUFFIXES:
            continue
        out[area_from_metric_key(key)] = float(value)
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
        all_pass_rate=metric(ALL_PASS_RATE),
        criterion_pass_rate=metric(CRITERION_PASS_RATE),
        area_all_pass=area_rates(metrics),
        base_all_pass_rate=metric(BASELINE_PREFIX + ALL_PASS_RATE),
        base_criterion_pass_rate=metric(BASELINE_PREFIX + CRITERION_PASS_RATE),
    )


def parse_results_jsonl(text: str) -> list[TaskOutcome]:
    """Per-task outcomes from the eval engine's results JSONL (rows carry ``criteria``)."""
    out: list[TaskOutcome] = []
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 in text
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
        except (ValueError, RecursionError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"results line {number}: {type(exc).__name__}: {exc}") from None
    return out


def version_evidence(
    reg: Registry, model: str, version: str, mv: ModelVersion | None = None
) -> Evidence:
    """Scores of ``model``/``version`` from its run; the version's own uptake.* tags win.
    ``mv``: the version, when already read."""
    mv = mv if mv is not None else reg.version(model, version)
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    if mv.run_id:
        metrics, tags = reg.run_data(mv.run_id)
    own = {k: v for k, v in (mv.tags or {}).items() if k.startswith(UPTAKE_TAG_PREFIX)}
    return evidence_from_run(
        model, str(mv.version), f"models:/{model}/{mv.version}", mv.run_id, metrics, {**tags, **own}
    )


def task_outcomes(reg: Registry, run_id: str, base: bool = False) -> list[TaskOutcome] | None:
    """Per-task results the eval engine logged to ``run_id`` (the base model's with ``base``),
    or None when the run has none."""
    text = reg.artifact_text(run_id, BASELINE_RESULTS_ARTIFACT if base else RESULTS_ARTIFACT)
    return None if text is None else parse_results_jsonl(text)


def gather(
    reg: Registry,
    model: str,
    version: str,
    *,
    with_task_outcomes: bool,
    candidate: Evidence | None = None,
) -> Case:
    """Read the case for ``model``/``version``: it, the champion of now and (when the gate
    tests significance) per-task outcomes. ``candidate``: its evidence, when just read from
    MLflow to check the event against it (not read twice)."""
    if candidate is None:
        candidate = version_evidence(reg, model, version)
    champion_version = reg.champion(model)
    champion = version_evidence(reg, model, champion_version) if champion_version else None
    outcomes: TaskOutcomes | str | None = None
    if with_task_outcomes and candidate.run_id:
        outcomes = _paired_outcomes(reg, candidate.run_id, champion)
    return Case(candidate=candidate, champion=champion, task_outcomes=outcomes)


class EventMismatch(PermanentError):
    """A ``candidate.registered`` says something MLflow does not: dead-lettered, not decided."""


class UnknownVersion(PermanentError):
    """A ``candidate.registered`` names a version that MLflow does not have."""


def _same(given: object, logged: object) -> bool:
    if isinstance(given, float) and isinstance(logged, float):
        return math.isclose(given, logged, rel_tol=0.0, abs_tol=1e-9)
    return given == logged


def event_differences(event: CandidateRegistered, logged: Evidence) -> list[str]:
    """Each field where the event disagrees with MLflow, as ``field: event X, MLflow Y``.

    The run id and release id identify the candidate: MLflow must have them and agree. A
    metric or suite sha is compared where MLflow has one; where it has none the gate rejects
    the candidate (the event's number is not evidence).
    """
    out: list[str] = []
    for name, given, mine, required in (
        ("run_id", event.run_id, logged.run_id, True),
        ("release_id", event.release_id, logged.release_id, True),
        ("suite_sha", event.suite_sha or None, logged.suite_sha, False),
        ("all_pass_rate", event.all_pass_rate, logged.all_pass_rate, False),
        ("criterion_pass_rate", event.criterion_pass_rate, logged.criterion_pass_rate, False),
        ("base_all_pass_rate", event.base_all_pass_rate, logged.base_all_pass_rate, False),
        (
            "base_criterion_pass_rate",
            event.base_criterion_pass_rate,
            logged.base_criterion_pass_rate,
            False,
        ),
    ):
        if given is None or (mine is None and not required) or _same(given, mine):
            continue
        out.append(f"{name}: event {given!r}, MLflow {mine!r}")
    return out


def verified_evidence(reg: Registry, event: CandidateRegistered) -> Evidence:
    """The candidate's evidence from MLflow, after checking that ``event`` agrees with it."""
    model, version = event.registered_model, str(event.version)
    mv = reg.find_version(model, version)
    if mv is None:
        raise UnknownVersion(f"candidate.registered for {model} v{version}: no such version")
    logged = version_evidence(reg, model, version, mv)
    diffs = event_differences(event, logged)
    if diffs:
        raise EventMismatch(
            f"candidate.registered for {model} v{version} disagrees with MLflow: "
            + "; ".join(diffs)
        )
    return logged


def _paired_outcomes(reg: Registry, run_id: str, champion: Evidence | None) -> TaskOutcomes | str:
    """The candidate's per-task outcomes and its comparator's: the champion's, else the base
    model's logged with the candidate."""
    try:
        mine = task_outcomes(reg, run_id)
        if champion is not None:
            theirs = task_outcomes(reg, champion.run_id) if champion.run_id else None
        else:
            theirs = task_outcomes(reg, run_id, base=True)
    except ValueError as exc:
        return f"unreadable per-task results: {exc}"
    if mine is None or theirs is None:
        return f"per-task results ({RESULTS_ARTIFACT}) are missing"
    return TaskOutcomes(comparator=theirs, candidate=mine)

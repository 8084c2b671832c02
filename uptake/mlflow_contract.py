"""Every MLflow name that more than one uptake service reads or writes, in one place.

The services talk through MLflow as much as through Kafka (DESIGN.md "MLflow conventions"):
the worker and the eval engine write run tags, metrics and artifacts; the registry reads them,
writes version tags and aliases; serving follows the aliases; people read and set tags in the
UI. A name that two of them must agree on is defined here and nowhere else, so none of the
service packages imports another's internals to learn it. This module imports nothing from
MLflow: it is only names and the one mapping from a practice area to a metric-name part.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final, Literal

# -- run tags (written by the worker / train / eval, read by the registry) ---------------------
RELEASE_ID_TAG: Final = "uptake.release_id"  # also on the model version
BASE_MODEL_TAG: Final = "uptake.base_model"
BASE_REVISION_TAG: Final = "uptake.base_revision"
RECIPE_SHA_TAG: Final = "uptake.recipe_sha"
SUITE_SHA_TAG: Final = "uptake.suite_sha"
TRACK_TAG: Final = "uptake.track"
UPTAKE_TAG_PREFIX: Final = "uptake."  # a version's own uptake.* tags override its run's

# -- the adoption timeline (run tags, ISO-8601 UTC; written by the worker, read by the report) --
# release created on the hub -> detected by the watcher -> each worker stage's start and end.
# The decision's time is PROMOTED_AT_TAG / the decision tags; serving writes SERVED_AT_TAG.
RELEASE_CREATED_AT_TAG: Final = "uptake.release_created_at"
DETECTED_AT_TAG: Final = "uptake.detected_at"
STAGE_TIME_PREFIX: Final = "uptake.stage."  # uptake.stage.<stage>.started_at / .ended_at
STAGE_STARTED_SUFFIX: Final = ".started_at"
STAGE_ENDED_SUFFIX: Final = ".ended_at"
# worker stages, in order (also the ``stage`` of run.stage / run.failed events)
WORKER_STAGES: Final = (
    "fetch",
    "preflight",
    "holdout",
    "baseline",
    "train",
    "evaluate",
    "register",
)


def stage_time_tag(stage: str, edge: Literal["started", "ended"]) -> str:
    """``uptake.stage.train.started_at``: when a worker stage started or ended."""
    suffix = STAGE_STARTED_SUFFIX if edge == "started" else STAGE_ENDED_SUFFIX
    return f"{STAGE_TIME_PREFIX}{stage}{suffix}"


# -- model version tags (written by the registry, read by people, the UI and serving) ----------
APPROVAL_TAG: Final = "approval"
APPROVAL_PENDING: Final = "pending"  # set by the registry while a person has to decide
APPROVAL_APPROVED: Final = "approved"
APPROVAL_REJECTED: Final = "rejected"
APPROVAL_VERDICTS: Final = (APPROVAL_APPROVED, APPROVAL_REJECTED)  # what a person sets
ApprovalVerdict = Literal["approved", "rejected"]
APPROVAL_BY_TAG: Final = "approval.by"
DECISION_TAG: Final = "uptake.decision"
DECISION_REASON_TAG: Final = "uptake.decision_reason"
DECIDED_BY_TAG: Final = "uptake.decided_by"  # on the candidate's run, with the two above
PROMOTED_BY_TAG: Final = "uptake.promoted_by"
PROMOTED_AT_TAG: Final = "uptake.promoted_at"
PROMOTION_REASON_TAG: Final = "uptake.promotion_reason"
PREVIOUS_CHAMPION_TAG: Final = "uptake.previous_champion"
NO_CHAMPION: Final = "none"  # value of PREVIOUS_CHAMPION_TAG when there was no champion
# first time a serving replica answered with this version (ISO-8601 UTC; written by serving)
SERVED_AT_TAG: Final = "uptake.served_at"

# -- registered model tags and aliases ---------------------------------------------------------
CHAMPION_ALIAS: Final = "champion"  # the version serving answers with
CHALLENGER_ALIAS: Final = "challenger"  # a version waiting for a person's approval
HISTORY_TAG_PREFIX: Final = "uptake.history."  # champion changes, one tag per change

# -- metrics (written by the eval engine, read by the registry's gate) -------------------------
ALL_PASS_RATE: Final = "all_pass_rate"
CRITERION_PASS_RATE: Final = "criterion_pass_rate"
MEAN_SCORE: Final = "mean_score"
N_TASKS: Final = "n_tasks"
N_CRITERIA: Final = "n_criteria"
# tasks whose prompt filled the model's context (failed every criterion without generating)
TASKS_CONTEXT_EXCEEDED: Final = "tasks_context_exceeded"
# tasks that generated only up to the end of the context (fewer than max_new_tokens)
TASKS_GENERATION_TRUNCATED: Final = "tasks_generation_truncated"
# cost beside quality (docs/evaluation.md "Cost"): tokens summed over the suite's tasks, the
# generation wall time, and — when a price was given — the cost of one task in price units
TOKENS_IN: Final = "tokens_in"  # prompt tokens
TOKENS_OUT: Final = "tokens_out"  # generated tokens
GENERATION_SECONDS: Final = "generation_seconds"  # wall time of generating every answer
COST_PER_TASK: Final = "cost_per_task"
PRICE_IN_PER_MTOK: Final = "price_in_per_mtok"  # the prices the cost was computed from
PRICE_OUT_PER_MTOK: Final = "price_out_per_mtok"
GPU_HOUR_PRICE: Final = "gpu_hour_price"
CPU_HOUR_PRICE: Final = "cpu_hour_price"  # an hour of the CPU machine (no GPU)
# agentic suites (docs/agentic.md): how the tasks were worked, beside how they scored
AGENT_TURNS_MEAN: Final = "agent.turns_mean"
AGENT_TOOL_CALLS_MEAN: Final = "agent.tool_calls_mean"
AGENT_DOCUMENTS_READ_RATE: Final = "agent.documents_read_rate"  # read of present, pooled
AGENT_DELIVERABLES_RATE: Final = "agent.deliverables_rate"  # produced of expected, pooled
AGENT_WALL_SECONDS_MEAN: Final = "agent.wall_seconds_mean"
JUDGE_ERRORS: Final = "judge_errors"  # criteria without a valid verdict (not counted as fails)
JUDGE_AGREEMENT: Final = "judge_agreement"  # two judges: share of criteria they agree on
AGENT_BASH_TAG: Final = "uptake.eval.agent_bash"  # "offered", or why not
JUDGES_TAG: Final = "uptake.eval.judges"  # the judge model(s), comma-separated
EVAL_MODEL_TAG: Final = "uptake.eval.model"  # which model a run scored (label in the report)
EVAL_BACKEND_TAG: Final = "uptake.eval.backend"  # transformers / openai
BASELINE_EVAL_MODEL_TAG: Final = "uptake.eval.baseline_model"
BASELINE_PREFIX: Final = "baseline."  # the base model's metrics, same names after the prefix
DELTA_PREFIX: Final = "delta."  # candidate minus base, from the paired comparison
MCNEMAR_P: Final = "mcnemar_p"
CI_LOW_SUFFIX: Final = ".ci_low"  # 95% bootstrap bounds of the metric they follow
CI_HIGH_SUFFIX: Final = ".ci_high"
CI_SUFFIXES: Final = (CI_LOW_SUFFIX, CI_HIGH_SUFFIX)

# -- artifacts (written by the eval engine, read by the registry) ------------------------------
EVAL_ARTIFACT_DIR: Final = "eval"
RESULTS_FILE: Final = "results.jsonl"
BASELINE_RESULTS_FILE: Final = "baseline_results.jsonl"
RESULTS_ARTIFACT: Final = f"{EVAL_ARTIFACT_DIR}/{RESULTS_FILE}"  # per-task results, candidate
BASELINE_RESULTS_ARTIFACT: Final = f"{EVAL_ARTIFACT_DIR}/{BASELINE_RESULTS_FILE}"
RESULTS_TABLE_ARTIFACT: Final = f"{EVAL_ARTIFACT_DIR}/results_table.json"  # for the MLflow UI
TRANSCRIPTS_DIR: Final = "transcripts"  # agentic suites: one JSON per task, beside the report
TRANSCRIPTS_ARTIFACT_DIR: Final = f"{EVAL_ARTIFACT_DIR}/{TRANSCRIPTS_DIR}"

# -- MLflow's own limits -----------------------------------------------------------------------
# Longest tag value uptake writes: below every limit of the MLflow 3.x stores (run tags 8000,
# registry tags more; older SQL schemas 5000), so a tag never fails on its length.
TAG_VALUE_MAX: Final = 5000
METRIC_KEY_MAX: Final = 250  # longest metric (and param, tag) name: MAX_ENTITY_KEY_LENGTH

# -- practice areas in metric names ------------------------------------------------------------
# MLflow (on POSIX) accepts word characters, "_", "-", ".", " ", ":" and "/" in metric names
# and refuses a name that changes under posixpath.normpath ("a//b", "x/", "../y"); see
# mlflow/utils/validation.py. A practice area is free text, so it is escaped: word characters,
# "-" and " " stay, every other character becomes ":" plus the upper-case hex of each of its
# UTF-8 bytes ("M&A" -> "M:26A", "IP/Tech" -> "IP:2FTech", "M_A" stays "M_A"). The result
# holds no "." or "/", so it cannot run into a ".ci_low" suffix or a path rule, and it decodes
# back to the area. The areas "ci_low" and "ci_high" get their first letter escaped as well,
# or they would read as the overall rate's bounds. An escape longer than _AREA_KEY_MAX (a very
# long name) is cut and ends in "::" plus 16 hex of the name's sha256; "::" never occurs in an
# uncut escape.
_KEEP = re.compile(r"[\w\- ]")
_LONGEST_FRAME = len(f"{DELTA_PREFIX}{BASELINE_PREFIX}{CRITERION_PASS_RATE}.{CI_HIGH_SUFFIX}")
_AREA_KEY_MAX = METRIC_KEY_MAX - _LONGEST_FRAME
_DIGEST_HEX = 16
_ESCAPE = re.compile(r":([0-9A-F]{2})")


def _escape(ch: str) -> str:
    if _KEEP.fullmatch(ch):
        return ch
    return "".join(f":{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))


def area_metric_key(area: str) -> str:
    """The metric-name part for a practice area: valid for MLflow and distinct per area."""
    escaped = "".join(_escape(ch) for ch in area)
    if f".{escaped}" in CI_SUFFIXES:  # "ci_low" would read as the overall rate's bound
        escaped = f":{ord(escaped[0]):02X}{escaped[1:]}"
    if len(escaped) <= _AREA_KEY_MAX:
        return escaped
    digest = hashlib.sha256(area.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_HEX]
    head = escaped[: _AREA_KEY_MAX - _DIGEST_HEX - 2]
    if ":" in head[-2:]:  # never leave half an escape before the digest
        head = head[: head.rindex(":")]
    return f"{head}::{digest}"


def area_from_metric_key(key: str) -> str:
    """The practice area an ``area_metric_key`` came from; a cut long name stays as logged.

    Keys logged before the escape existed hold no ":" and read back unchanged.
    """
    if "::" in key or ":" not in key:
        return key
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(key):
        out += key[pos : m.start()].encode("utf-8") + bytes.fromhex(m.group(1))
        pos = m.end()
    out += key[pos:].encode("utf-8")
    return out.decode("utf-8", "replace")


def area_metric(metric: str, area: str, prefix: str = "") -> str:
    """``<prefix><metric>.<area key>``, e.g. ``baseline.all_pass_rate.M:26A``."""
    return f"{prefix}{metric}.{area_metric_key(area)}"

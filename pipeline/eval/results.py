"""The results object and its JSONL form (one task per line, self-describing rows).

Every row carries the model, backend and suite sha256 besides the task's response and
verdicts, so a results file alone is enough to recompute metrics (seeded, hence identical)
and to serve as ``--baseline`` for a paired comparison on the same suite.

A response may hold any character. Rows are written with U+0085, U+2028 and U+2029 escaped
(JSON allows it; ``json.dumps`` leaves them raw) and read back split on ``\n`` only, so a
model's answer can never break its own results file for any reader.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)

from pipeline.eval.metrics import DEFAULT_BOOTSTRAP, Metrics, compute_metrics
from pipeline.eval.suite import jsonl_lines, parse_json_line
from uptake.errors import InputError, describe_validation_error

MAX_COUNT = 2**31 - 1  # tokens, batch sizes: far above any real value, far below a bignum
MAX_SECONDS = 10.0**9  # about 30 years
# Line breaks to str.splitlines() that json.dumps(ensure_ascii=False) leaves unescaped.
_RAW_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


class CriterionResult(BaseModel):
    id: str
    description: str
    type: str
    passed: bool
    reason: str
    judge_error: bool = False  # no valid verdict: not passed, and counted apart from fails
    verdicts: dict[str, bool | None] | None = None  # per judge, when two judged it

    @model_serializer(mode="wrap")
    def _lean(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Single-turn rows stay as they were: the agentic fields only when they say something."""
        data: dict[str, Any] = handler(self)
        if not self.judge_error:
            data.pop("judge_error", None)
        if self.verdicts is None:
            data.pop("verdicts", None)
        return data


class AgentStats(BaseModel):
    """How an agentic task was worked (pipeline/eval/agent): next to its scores."""

    turns: int = Field(0, ge=0, le=MAX_COUNT)
    tool_calls: int = Field(0, ge=0, le=MAX_COUNT)
    tool_errors: int = Field(0, ge=0, le=MAX_COUNT)
    documents_read: int = Field(0, ge=0, le=MAX_COUNT)
    documents_present: int = Field(0, ge=0, le=MAX_COUNT)
    deliverables: list[str] = Field(default_factory=list)
    deliverables_expected: int = Field(0, ge=0, le=MAX_COUNT)
    wall_seconds: float = Field(0.0, ge=0, le=MAX_SECONDS)
    model_seconds: float = Field(0.0, ge=0, le=MAX_SECONDS)
    stop_reason: str = "done"
    error: str | None = None
    bash_offered: bool = False
    transcript: str | None = None  # the transcript file, relative to the results' run folder


class TaskResult(BaseModel):
    model_config = ConfigDict(extra="ignore")

    task_id: str
    practice_area: str
    messages: list[dict[str, str]]
    response: str
    criteria: list[CriterionResult]
    n_tokens: int = Field(0, ge=0, le=MAX_COUNT)  # tokens out (generated)
    prompt_tokens: int = Field(0, ge=0, le=MAX_COUNT)  # tokens in (the rendered prompt)
    finish_reason: Literal["stop", "length"] = "stop"
    generation_truncated: bool = False  # the context left less than max_new_tokens
    failure: Literal["context_exceeded"] | None = None  # failed all criteria without generating
    agent: AgentStats | None = None  # agentic suites only

    @model_serializer(mode="wrap")
    def _lean(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.agent is None:
            data.pop("agent", None)
        return data

    @property
    def n_passed(self) -> int:
        return sum(c.passed for c in self.criteria)

    @property
    def n_criteria(self) -> int:
        return len(self.criteria)

    @property
    def score(self) -> float:
        return self.n_passed / self.n_criteria

    @property
    def all_pass(self) -> bool:
        return self.n_passed == self.n_criteria


class GenerationStats(BaseModel):
    seconds: float = Field(0.0, ge=0, le=MAX_SECONDS)
    n_tokens: int = Field(0, ge=0, le=MAX_COUNT)
    batch_size: int = Field(0, ge=0, le=MAX_COUNT)

    @property
    def tokens_per_s(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else 0.0


class EvalResult(BaseModel):
    model: str
    backend: str
    suite_name: str
    suite_sha256: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    tasks: list[TaskResult]
    metrics: Metrics
    generation: GenerationStats = GenerationStats()
    # agentic suites (pipeline/eval/agent): where the transcripts are, the sandbox, the judges
    transcripts_dir: str | None = None
    bash_available: bool | None = None
    bash_note: str | None = None  # why bash was not offered
    judges: list[str] = Field(default_factory=list)

    @property
    def tokens_in(self) -> int:
        """Prompt tokens over all tasks (docs/evaluation.md "Cost")."""
        return sum(t.prompt_tokens for t in self.tasks)

    @property
    def tokens_out(self) -> int:
        """Generated tokens over all tasks."""
        return sum(t.n_tokens for t in self.tasks)

    @property
    def areas(self) -> list[str]:
        return sorted(self.metrics.per_area)

    def task_map(self) -> dict[str, TaskResult]:
        return {t.task_id: t for t in self.tasks}

    def summary(self) -> dict[str, Any]:
        """The ``--json`` object: headline rates, counts, per-area rates and intervals."""
        m = self.metrics
        return {
            "model": self.model,
            "suite": self.suite_name,
            "suite_sha256": self.suite_sha256,
            "all_pass_rate": m.all_pass_rate,
            "criterion_pass_rate": m.criterion_pass_rate,
            "n_tasks": m.n_tasks,
            "n_criteria": m.n_criteria,
            "mean_score": m.mean_score,
            "per_area": {
                area: {
                    "n_tasks": a.n_tasks,
                    "all_pass_rate": a.all_pass_rate,
                    "criterion_pass_rate": a.criterion_pass_rate,
                    "ci": a.ci.model_dump() if a.ci else None,
                }
                for area, a in m.per_area.items()
            },
            "ci": {"confidence": m.confidence, **m.ci.model_dump()},
            "score_histogram": m.score_histogram,
            "score_deciles": m.score_deciles,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "generation_seconds": self.generation.seconds or None,
            **({"agent": agent_summary(self.tasks)} if any(t.agent for t in self.tasks) else {}),
        }


def agent_summary(tasks: list[TaskResult]) -> dict[str, Any]:
    """Agentic runs' statistics over tasks, and each judge's rates and their agreement."""
    stats = [t.agent for t in tasks if t.agent is not None]
    n = len(stats)
    criteria = [c for t in tasks for c in t.criteria]
    judges = sorted({j for c in criteria for j in (c.verdicts or {})})
    per_judge: dict[str, Any] = {}
    for judge in judges:
        said = [c.verdicts[judge] for c in criteria if c.verdicts and judge in c.verdicts]
        task_all = [
            all(c.verdicts is not None and c.verdicts.get(judge) is True for c in t.criteria)
            for t in tasks
        ]
        per_judge[judge] = {
            "criterion_pass_rate": sum(v is True for v in said) / len(criteria)
            if criteria
            else None,
            "all_pass_rate": sum(task_all) / len(tasks) if tasks else None,
            "errors": sum(v is None for v in said),
        }
    both = [
        c.verdicts
        for c in criteria
        if c.verdicts and len(c.verdicts) > 1 and all(v is not None for v in c.verdicts.values())
    ]
    agreement = sum(len(set(v.values())) == 1 for v in both) / len(both) if both else None
    return {
        "n_tasks": n,
        "turns_mean": sum(s.turns for s in stats) / n if n else 0.0,
        "tool_calls_mean": sum(s.tool_calls for s in stats) / n if n else 0.0,
        "tool_errors": sum(s.tool_errors for s in stats),
        "documents_read": sum(s.documents_read for s in stats),
        "documents_present": sum(s.documents_present for s in stats),
        "deliverables_produced": sum(len(s.deliverables) for s in stats),
        "deliverables_expected": sum(s.deliverables_expected for s in stats),
        "wall_seconds_mean": sum(s.wall_seconds for s in stats) / n if n else 0.0,
        "stop_reasons": dict(Counter(s.stop_reason for s in stats)),
        "bash_offered": any(s.bash_offered for s in stats),
        "judge_errors": sum(c.judge_error for c in criteria),
        "judges": per_judge,
        "judge_agreement": agreement,
    }


class _Row(TaskResult):
    """One JSONL line: a task result plus what identifies its run (score/all_pass, written
    for readers of the file, are ignored on load and recomputed from the verdicts)."""

    model: str
    backend: str
    suite_name: str
    suite_sha256: str


def _row_json(row: dict[str, Any]) -> str:
    text = json.dumps(row, ensure_ascii=False)
    for raw, escaped in _RAW_BREAKS.items():
        text = text.replace(raw, escaped)  # only ever inside strings: JSON text has no others
    return text


def save_results(result: EvalResult, path: str | Path) -> Path:
    """Write one JSON line per task."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    run = {
        "model": result.model,
        "backend": result.backend,
        "suite_name": result.suite_name,
        "suite_sha256": result.suite_sha256,
    }
    with path.open("w", encoding="utf-8") as fh:
        for task in result.tasks:
            row = {**task.model_dump(), "score": task.score, "all_pass": task.all_pass, **run}
            fh.write(_row_json(row) + "\n")
    return path


def load_results(path: str | Path, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> EvalResult:
    """Read a results JSONL back into an EvalResult (metrics recomputed, seeded)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"results file not found: {path}")
    rows: list[_Row] = []
    errors: list[str] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"invalid results file {path}: not UTF-8 (at byte {exc.start})") from None
    for number, line in jsonl_lines(text):
        try:
            rows.append(_Row.model_validate(parse_json_line(line)))
        except ValidationError as exc:  # a ValueError too: caught first
            errors.append(f"{path}:{number}: {describe_validation_error(exc)}")
        except ValueError as exc:
            errors.append(f"{path}:{number}: {exc}")
    if errors:
        raise InputError(f"invalid results file {path}: " + "; ".join(errors))
    if not rows:
        raise InputError(f"results file {path} has no tasks")
    shas = {r.suite_sha256 for r in rows}
    if len(shas) > 1:
        raise InputError(f"results file {path} mixes {len(shas)} suites")
    counts = Counter(r.task_id for r in rows)
    repeated = sorted(task_id for task_id, n in counts.items() if n > 1)
    if repeated:  # a comparison lines tasks up by id: a repeat would silently pick one
        raise InputError(f"results file {path} repeats task ids: {', '.join(repeated[:5])}")
    first = rows[0]
    tasks = [TaskResult.model_validate(r.model_dump()) for r in rows]
    return EvalResult(
        model=first.model,
        backend=first.backend,
        suite_name=first.suite_name,
        suite_sha256=first.suite_sha256,
        tasks=tasks,
        metrics=compute_metrics(tasks, n_boot=n_boot, seed=seed),
    )

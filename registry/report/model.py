"""What an adoption report shows, as plain data: gathered from MLflow once, rendered twice.

Every field a run may lack is optional: a report of a version whose worker wrote no timeline
or whose promoter has not decided yet still renders, with a dash
(``uptake.formatting.MISSING``) where a value is missing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from uptake.errors import PermanentError
from uptake.events import GateCheck


class ReportError(PermanentError):
    """A version cannot be reported (no such version, no run, no headline metrics): exit 1."""


class Row(BaseModel):
    """One line of the adoption table."""

    version: str
    release: str
    base_all_pass: float | None = None
    base_criterion: float | None = None
    post_all_pass: float | None = None
    post_criterion: float | None = None
    decision: str | None = None
    release_to_serving_s: float | None = None


class AreaBar(BaseModel):
    """A practice area's all-pass rate before and after, with 95% bootstrap bounds."""

    area: str
    base: float | None = None
    base_low: float | None = None
    base_high: float | None = None
    post: float | None = None
    post_low: float | None = None
    post_high: float | None = None


class Paired(BaseModel):
    """The paired comparison logged with the candidate (candidate minus base)."""

    all_pass_diff: float | None = None
    all_pass_low: float | None = None
    all_pass_high: float | None = None
    criterion_diff: float | None = None
    criterion_low: float | None = None
    criterion_high: float | None = None
    mcnemar_p: float | None = None


class TimelinePoint(BaseModel):
    """One step from release to serving; ``ended`` only for worker stages."""

    label: str
    at: datetime | None = None
    ended: datetime | None = None


CostKind = Literal["base", "candidate", "champion", "external"]


class CostPoint(BaseModel):
    """One model scored on the suite: its quality and what one task costs."""

    label: str
    kind: CostKind
    run_id: str
    all_pass: float
    criterion: float
    cost_per_task: float | None = None
    tokens_in_per_task: float | None = None
    tokens_out_per_task: float | None = None
    seconds_per_task: float | None = None
    this_version: bool = False


class AgentTask(BaseModel):
    """How the post-trained model worked one agentic task (results rows' ``agent``)."""

    task_id: str
    score: float
    turns: int
    tool_calls: int
    documents_read: int
    documents_present: int
    deliverables: int
    deliverables_expected: int
    tokens_in: int
    tokens_out: int
    wall_seconds: float
    stop_reason: str
    transcript: str | None = None  # a link to the task's transcript artifact


class VersionReport(BaseModel):
    registered_model: str
    version: str
    run_id: str
    release_id: str
    base_model: str | None = None
    suite_sha: str | None = None
    row: Row
    areas: list[AreaBar] = []
    base_scores: list[float] | None = None  # per-task scores, when the results were logged
    post_scores: list[float] | None = None
    decision_reason: str | None = None
    checks: list[GateCheck] = []
    paired: Paired = Paired()
    timeline: list[TimelinePoint] = []
    cost_points: list[CostPoint] = []
    agent_tasks: list[AgentTask] = []  # agentic suites only
    notes: list[str] = []  # what could not be read, said once on the page

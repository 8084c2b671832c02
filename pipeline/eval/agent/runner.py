"""``run_agentic_eval``: every task of an agentic suite through the agent loop, then graded.

Tasks run concurrently (``concurrency`` at once); each gets a fresh workspace under
``work_dir/workspaces/<task>`` and leaves its transcript in ``work_dir/transcripts/``. The
result is an ordinary ``EvalResult`` (same metrics, comparison, gate and report as a
single-turn suite), each task carrying its ``AgentStats``.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline.eval.agent.convert import import_converters
from pipeline.eval.agent.grade import grade_criterion
from pipeline.eval.agent.lab import AgenticSuite, AgenticTask
from pipeline.eval.agent.loop import AgentLimits, Transcript, run_agent
from pipeline.eval.agent.models import ChatModel
from pipeline.eval.agent.sandbox import probe
from pipeline.eval.agent.workspace import Workspace
from pipeline.eval.judge import Judge
from pipeline.eval.metrics import DEFAULT_BOOTSTRAP, compute_metrics
from pipeline.eval.results import AgentStats, EvalResult, GenerationStats, TaskResult
from uptake.errors import InputError
from uptake.settings import JudgeSettings

Progress = Callable[[str, int, int], None]
TRANSCRIPTS = "transcripts"
WORKSPACES = "workspaces"


def task_dir_name(task_id: str) -> str:
    """A flat, safe folder/file name for a task id (``area/task/scenario``)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "__", task_id).strip("._") or "task"
    return f"{clean[:100]}-{hashlib.sha256(task_id.encode()).hexdigest()[:8]}"


def judge_names(judges: list[Judge]) -> list[str]:
    """A distinct name per judge for its verdicts (two endpoints may serve one model name)."""
    names: list[str] = []
    for judge in judges:
        name, n = judge.model, 1
        while name in names:
            n += 1
            name = f"{judge.model}#{n}"
        names.append(name)
    return names


def stats_of(task: AgenticTask, transcript: Transcript, transcript_file: str) -> AgentStats:
    return AgentStats(
        turns=len(transcript.turns),
        tool_calls=len(transcript.tool_events),
        tool_errors=sum(e.error for e in transcript.tool_events),
        documents_read=len(transcript.documents_read),
        documents_present=len(transcript.documents_present),
        deliverables=transcript.deliverables,
        deliverables_expected=len(task.deliverables),
        wall_seconds=transcript.wall_seconds,
        model_seconds=transcript.model_seconds,
        stop_reason=transcript.stop_reason,
        error=transcript.error,
        bash_offered=transcript.bash_offered,
        transcript=transcript_file,
    )


def run_agentic_eval(
    model: ChatModel,
    suite: AgenticSuite,
    judges: list[JudgeSettings],
    work_dir: str | Path,
    *,
    limits: AgentLimits | None = None,
    concurrency: int = 4,
    judge_concurrency: int = 4,
    judge_cache_dir: str | Path | None = None,
    bash: bool = True,
    bwrap: str = "bwrap",
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    progress: Progress | None = None,
    backend: str = "agent",
) -> EvalResult:
    """Run and grade every task; judge settings are checked before the first model call."""
    configured = [j for j in judges if j.configured]
    if not configured:
        raise InputError(
            f"agentic suite {suite.name} is graded by an LLM judge but none is configured "
            "(set judge.base_url and judge.model)"
        )
    if len(configured) > 2:
        raise InputError(f"at most two judges, got {len(configured)}")
    if concurrency < 1:
        raise InputError(f"concurrency must be at least 1, got {concurrency}")
    limits = limits or AgentLimits()
    work = Path(work_dir)
    sandbox = probe(bwrap) if bash else None
    bash_binary = sandbox.reason if sandbox is not None and sandbox.available else None
    import_converters()
    clients = [Judge(j, cache_dir=judge_cache_dir) for j in configured]
    named = list(zip(judge_names(clients), clients, strict=True))
    total = len(suite.tasks)
    done = {"generate": 0, "grade": 0}  # "generate": tasks the agent finished (worker progress)

    def tick(stage: str) -> None:
        done[stage] += 1
        if progress is not None:
            progress(stage, done[stage], total)

    def one(task: AgenticTask) -> TaskResult:
        name = task_dir_name(task.id)
        docs = Path(task.document_dir) if task.document_dir else None
        workspace = Workspace.create(work / WORKSPACES / name, docs, bash_binary=bash_binary)
        transcript = run_agent(model, task.id, task.instructions, workspace, limits)
        transcript_file = f"{TRANSCRIPTS}/{name}.json"
        transcript.save(work / transcript_file)
        tick("generate")
        final = next(
            (m["content"] for m in reversed(transcript.messages) if m["role"] == "assistant"), ""
        )
        with ThreadPoolExecutor(max_workers=max(1, judge_concurrency)) as pool:
            criteria = list(
                pool.map(
                    lambda c: grade_criterion(task, c, workspace.output, named, str(final or "")),
                    task.criteria,
                )
            )
        tick("grade")
        return TaskResult(
            task_id=task.id,
            practice_area=task.practice_area,
            messages=[{"role": "user", "content": task.instructions}],
            response=str(final or ""),
            criteria=criteria,
            n_tokens=transcript.tokens_out,
            prompt_tokens=transcript.tokens_in,
            agent=stats_of(task, transcript, transcript_file),
        )

    began = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            tasks = list(pool.map(one, suite.tasks))
    finally:
        for client in clients:
            client.close()
    seconds = time.monotonic() - began
    return EvalResult(
        model=model.name,
        backend=backend,
        suite_name=suite.name,
        suite_sha256=suite.sha256,
        tasks=tasks,
        metrics=compute_metrics(tasks, n_boot=n_boot, seed=seed),
        generation=GenerationStats(
            seconds=seconds, n_tokens=sum(t.n_tokens for t in tasks), batch_size=concurrency
        ),
        transcripts_dir=str(work / TRANSCRIPTS),
        bash_available=bash_binary is not None,
        bash_note=(
            "bash disabled (agent.bash: false)"
            if sandbox is None
            else None
            if sandbox.available
            else sandbox.reason
        ),
        judges=[name for name, _ in named],
    )

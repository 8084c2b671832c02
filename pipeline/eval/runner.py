"""``run_eval``: generate answers for every task of a suite, grade them, compute metrics.

Order matters for cost: everything that can reject the run (judge criteria without a
configured judge, a bad model directory) fails before the first token is generated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, NamedTuple

from pipeline.eval.checks import run_check
from pipeline.eval.generate import Backend, Generation, GenRequest, make_backend, timed
from pipeline.eval.judge import Judge
from pipeline.eval.metrics import DEFAULT_BOOTSTRAP, compute_metrics
from pipeline.eval.results import CriterionResult, EvalResult, GenerationStats, TaskResult
from pipeline.eval.suite import Criterion, JudgeCheck, Suite, Task
from pipeline.eval.suites import AnySuite
from uptake.agent_config import AgentSettings
from uptake.errors import InputError
from uptake.settings import JudgeSettings

# (stage, done, total): stage is "generate" or "grade"; the CLI turns it into progress bars.
ProgressHook = Callable[[str, int, int], None]


def require_judge(suite: AnySuite, judge: JudgeSettings | None) -> None:
    """A suite with judge criteria cannot be graded without a judge: say so up front."""
    if not suite.has_judge or (judge is not None and judge.configured):
        return
    n = (
        suite.n_criteria
        if not isinstance(suite, Suite)
        else sum(1 for t in suite.tasks for c in t.criteria if c.check.type == "judge")
    )
    raise InputError(
        f"suite {suite.name} has {n} judge criteria but no judge is configured "
        "(set judge.base_url and judge.model, e.g. UPTAKE_JUDGE__BASE_URL / UPTAKE_JUDGE__MODEL)"
    )


class Grade(NamedTuple):
    """One criterion's verdict; ``source``: ``check`` (in-process), ``judge`` or ``cache``."""

    passed: bool
    reason: str
    source: Literal["check", "judge", "cache"]


def grade_criterion(task: Task, criterion: Criterion, response: str, judge: Judge | None) -> Grade:
    """Grade one criterion: checks in-process, judge criteria through ``judge`` (cached).
    The one grading path of evaluation and of RL rewards (pipeline.train.reward)."""
    if isinstance(criterion.check, JudgeCheck):
        if judge is None:
            raise InputError(f"task {task.id!r} needs a judge")
        verdict, cached = judge.grade_cached(task, criterion, response)
        return Grade(verdict.passed, verdict.reason, "cache" if cached else "judge")
    check = run_check(criterion.check, response)
    return Grade(check.passed, check.reason, "check")


def grade_task(task: Task, gen: Generation, judge: Judge | None) -> TaskResult:
    """Grade one answer. A prompt that filled the model's context got no answer: it fails
    every criterion with reason ``context_exceeded`` (the judge is not asked), so every model
    on a suite is scored on the same tasks."""
    results = []
    for criterion in task.criteria:
        if gen.context_exceeded:
            passed = False
            reason = (
                f"context_exceeded: the prompt ({gen.prompt_tokens} tokens) fills the model's "
                "context, nothing was generated"
            )
        else:
            passed, reason, _ = grade_criterion(task, criterion, gen.text, judge)
        results.append(
            CriterionResult(
                id=criterion.id,
                description=criterion.description,
                type=criterion.check.type,
                passed=passed,
                reason=reason,
            )
        )
    return TaskResult(
        task_id=task.id,
        practice_area=task.practice_area,
        messages=[m.model_dump() for m in task.messages],
        response=gen.text,
        criteria=results,
        n_tokens=gen.n_tokens,
        prompt_tokens=gen.prompt_tokens or 0,
        finish_reason=gen.finish_reason,
        generation_truncated=gen.generation_truncated,
        failure="context_exceeded" if gen.context_exceeded else None,
    )


def run_eval(
    model: str | Path | Backend,
    suite: AnySuite,
    *,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    judge: JudgeSettings | None = None,
    backend: str = "transformers",
    seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
    api_model: str | None = None,
    api_key: str | None = None,
    api_timeout_s: float = 300.0,
    judge_cache_dir: str | Path | None = None,
    judge_concurrency: int = 4,
    n_boot: int = DEFAULT_BOOTSTRAP,
    progress: ProgressHook | None = None,
    allowlist: Iterable[str] = (),
    repo_id: str | None = None,
    agent: AgentSettings | None = None,
    work_dir: str | Path | None = None,
) -> EvalResult:
    """Score ``model`` (a directory, an endpoint URL, or a loaded backend) on ``suite``.

    ``max_new_tokens`` overrides every task's and the suite's limit when given. ``allowlist``
    (settings' ``trust_remote_code_allowlist``) and ``repo_id`` decide, as in training, whether
    a local model that needs its own code may run it. Judge verdicts are cached in
    ``judge_cache_dir`` when given (the CLI passes ``<state dir>/judge-cache``): library code
    reads no global settings, so the caller says where.

    An agentic suite runs through the agent harness (``pipeline.eval.agent``) with ``agent``'s
    caps and second judge; its workspaces and transcripts go under ``work_dir``.
    """
    require_judge(suite, judge)
    if not isinstance(suite, Suite):
        from pipeline.eval.agent.entry import run_agentic

        if isinstance(model, str | Path):
            return run_agentic(
                model,
                suite,
                judge=judge,
                agent=agent or AgentSettings(),
                work_dir=work_dir,
                device=device,
                seed=seed,
                threads=threads,
                api_model=api_model,
                api_key=api_key,
                judge_cache_dir=judge_cache_dir,
                judge_concurrency=judge_concurrency,
                n_boot=n_boot,
                progress=progress,
                allowlist=allowlist,
                repo_id=repo_id,
            )
        raise InputError("an agentic suite needs a model directory or endpoint URL")
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    owned = isinstance(model, str | Path)
    if isinstance(model, str | Path):
        engine = make_backend(
            model,
            backend,
            device=device,
            seed=seed,
            threads=threads,
            api_model=api_model,
            api_key=api_key,
            api_timeout_s=api_timeout_s,
            allowlist=allowlist,
            repo_id=repo_id,
        )
    else:
        engine = model
    requests = [
        GenRequest(
            messages=[m.model_dump() for m in task.messages],
            max_new_tokens=suite.max_new_tokens_for(task, max_new_tokens),
        )
        for task in suite.tasks
    ]
    total = len(requests)
    done = {"generate": 0, "grade": 0}

    def tick(stage: str, n: int) -> None:
        done[stage] += n
        if progress is not None:
            progress(stage, done[stage], total)

    if progress is not None:
        progress("generate", 0, total)
    try:
        generations, seconds = timed(
            lambda: engine.generate(requests, batch_size, lambda n: tick("generate", n))
        )
    finally:
        if owned and hasattr(engine, "close"):
            engine.close()  # an HTTP client; a local model is freed with the backend

    judge_client = None
    if suite.has_judge and judge is not None:
        judge_client = Judge(judge, cache_dir=judge_cache_dir)
    try:
        workers = judge_concurrency if judge_client is not None else 1
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [
                pool.submit(grade_task, task, gen, judge_client)
                for task, gen in zip(suite.tasks, generations, strict=True)
            ]
            tasks = []
            for future in futures:
                tasks.append(future.result())
                tick("grade", 1)
    finally:
        if judge_client is not None:
            judge_client.close()

    return EvalResult(
        model=engine.model_name,
        backend=engine.name,
        suite_name=suite.name,
        suite_sha256=suite.sha256,
        tasks=tasks,
        metrics=compute_metrics(tasks, n_boot=n_boot, seed=seed),
        generation=GenerationStats(
            seconds=seconds, n_tokens=sum(g.n_tokens for g in generations), batch_size=batch_size
        ),
    )

"""From ``run_eval``'s arguments to an agentic run: pick the chat model, the judges, the caps."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from pipeline.eval.agent.lab import AgenticSuite
from pipeline.eval.agent.loop import AgentLimits
from pipeline.eval.agent.models import ChatModel, LocalChatModel, OpenAIChatModel
from pipeline.eval.agent.runner import run_agentic_eval
from pipeline.eval.generate import is_url
from pipeline.eval.results import EvalResult
from uptake.agent_config import AgentSettings
from uptake.settings import JudgeSettings


def chat_model(
    model: str | Path,
    *,
    device: str = "auto",
    seed: int = 0,
    threads: int | None = None,
    api_model: str | None = None,
    api_key: str | None = None,
    allowlist: Iterable[str] = (),
    repo_id: str | None = None,
) -> ChatModel:
    """An endpoint URL → the OpenAI client; a directory → the in-process engine."""
    if is_url(model):
        return OpenAIChatModel(str(model), model=api_model, api_key=api_key)
    return LocalChatModel(
        model, device=device, seed=seed, threads=threads, allowlist=allowlist, repo_id=repo_id
    )


def limits_of(agent: AgentSettings) -> AgentLimits:
    return AgentLimits(
        max_turns=agent.max_turns,
        deadline_s=agent.task_deadline_s,
        token_budget=agent.token_budget,
        max_tokens_per_turn=agent.max_tokens_per_turn,
    )


def run_agentic(
    model: str | Path,
    suite: AgenticSuite,
    *,
    judge: JudgeSettings | None,
    agent: AgentSettings,
    work_dir: str | Path | None,
    device: str = "auto",
    seed: int = 0,
    threads: int | None = None,
    api_model: str | None = None,
    api_key: str | None = None,
    judge_cache_dir: str | Path | None = None,
    judge_concurrency: int = 4,
    n_boot: int = 2000,
    progress: Callable[[str, int, int], None] | None = None,
    allowlist: Iterable[str] = (),
    repo_id: str | None = None,
) -> EvalResult:
    judges = [j for j in (judge, agent.second_judge) if j is not None and j.configured]
    engine = chat_model(
        model,
        device=device,
        seed=seed,
        threads=threads,
        api_model=api_model,
        api_key=api_key,
        allowlist=allowlist,
        repo_id=repo_id,
    )
    work = (
        Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="uptake-agent-"))
    )
    try:
        return run_agentic_eval(
            engine,
            suite,
            judges,
            work,
            limits=limits_of(agent),
            concurrency=agent.concurrency,
            judge_concurrency=judge_concurrency,
            judge_cache_dir=judge_cache_dir,
            bash=agent.bash,
            n_boot=n_boot,
            seed=seed,
            progress=progress,
            backend="openai" if is_url(model) else "transformers",
        )
    finally:
        engine.close()

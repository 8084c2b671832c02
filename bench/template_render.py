"""Benchmark: what a model's own chat template costs a served request, against ChatML.

    .venv/bin/python bench/template_render.py [--requests 40] [--gap-s 0.2] [--renders 200]
                                              [--label L] [--out bench/results/template_render.json]

Builds two random tiny Llamas that differ only in their chat template: uptake's ChatML, and a
Zephyr-style template of the model's own (``<|user|>``, ``eos_token``: untrusted, so it takes
the bounded-render path). Each is loaded by the serving engine (``TransformersEngine.load``,
warm-up included) and answers ``--requests`` sequential one-token greedy requests, ``--gap-s``
apart (0: back to back, as under load), interleaved. Reports the median and p90 request latency
of both and the difference: what rendering the model's own template adds to a request. Then
render alone: the own template in its warm bounded child (``GenerationPrep.render``, what
serving does) against the same template in process (``apply_chat_template``, what serving
would do if the check at load alone guarded it), ``--renders`` times each. ``--label`` keys
the run in ``--out``, so runs of two commits sit side by side (``before``: the engine at
64ea943, which started a render child per batch and has no render-alone numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serving.engine import GenerationRequest  # noqa: E402
from serving.engines.transformers_engine import TransformersEngine  # noqa: E402
from uptake.testing.tiny_models import TinyModelSpec, build_tiny_model  # noqa: E402

ZEPHYR = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + eos_token }}"
    "{% elif message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + eos_token }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' + message['content'] + eos_token }}{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    "{% endfor %}"
)
REQUEST = GenerationRequest.model_validate(
    {
        "messages": [
            {"role": "system", "content": "You are a careful legal assistant."},
            {"role": "user", "content": "When must the notice be served?"},
        ],
        "max_tokens": 1,
        "temperature": 0,
    }
)


def build(root: Path) -> dict[str, Path]:
    from transformers import AutoTokenizer

    chatml = build_tiny_model(root / "chatml", TinyModelSpec(chat_template="plain", seed=1))
    own = build_tiny_model(root / "own", TinyModelSpec(chat_template="plain", seed=1))
    tok = AutoTokenizer.from_pretrained(own)
    tok.chat_template = ZEPHYR
    tok.save_pretrained(own)
    return {"chatml": chatml, "own": own}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace, dirs: dict[str, Path]) -> dict[str, Any]:
    engine = TransformersEngine(device="cpu", torch_threads=1)
    started = time.perf_counter()
    versions = {name: await engine.load("bench", name, path) for name, path in dirs.items()}
    load_s = time.perf_counter() - started
    latencies: dict[str, list[float]] = {name: [] for name in dirs}
    try:
        for _ in range(args.requests):
            for name, version in versions.items():  # interleaved: load moves both alike
                await asyncio.sleep(args.gap_s)
                start = time.perf_counter()
                await version.generate(REQUEST)
                latencies[name].append(time.perf_counter() - start)
        own = versions["own"]  # before the shared prep (64ea943) the engine had no ``prep``
        out_render = render_only(own.prep, args.renders) if hasattr(own, "prep") else None
    finally:
        await engine.aclose()
    out: dict[str, Any] = {
        name: {
            "median_ms": round(1000 * statistics.median(v), 2),
            "p90_ms": round(1000 * pct(v, 0.9), 2),
            "max_ms": round(1000 * max(v), 2),
        }
        for name, v in latencies.items()
    }
    out["own_minus_chatml_median_ms"] = round(
        out["own"]["median_ms"] - out["chatml"]["median_ms"], 2
    )
    out["load_both_s"] = round(load_s, 2)
    out["render_only_own_template"] = out_render
    return out


def render_only(prep: Any, n: int) -> dict[str, float]:
    """Median render time of one conversation: warm bounded child vs in process."""
    conversation = [m.model_dump() for m in REQUEST.messages]
    child, in_process = [], []
    for _ in range(n):
        start = time.perf_counter()
        prep.render([conversation])
        child.append(time.perf_counter() - start)
        start = time.perf_counter()
        prep.tokenizer.apply_chat_template(
            conversation, chat_template=prep.template, tokenize=False, add_generation_prompt=True
        )
        in_process.append(time.perf_counter() - start)
    return {
        "warm_child_median_ms": round(1000 * statistics.median(child), 3),
        "in_process_median_ms": round(1000 * statistics.median(in_process), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--gap-s", type=float, default=0.2)
    parser.add_argument("--renders", type=int, default=200)
    parser.add_argument("--label", default="run", help="key of this run in --out")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/template_render.json")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(args, build(Path(tmp))))
    result.update(
        {
            "requests": args.requests,
            "gap_s": args.gap_s,
            "load_avg_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        }
    )
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(args.out.read_text()) if args.out.exists() else {}
    runs[args.label] = result
    args.out.write_text(json.dumps(runs, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Benchmark (CPU): the uptake recipe vs plain ``SFTTrainer`` defaults, same model, data and run.

    .venv/bin/python bench/train.py [--repeat 3] [--ablation] [--out bench/results/train.json]

Builds a random tiny Llama whose tokenizer is trained on examples/legal/train.jsonl and trains
it for one epoch of that file (640 conversations) twice per repeat, interleaved:

- ``trl_defaults``: ``SFTTrainer(model=<dir>, args=SFTConfig(...defaults...))``. Only what the
  comparison needs is set: one epoch, CPU, no checkpoints, no reporting, and the token counter
  (``include_num_input_tokens_seen="non_padding"``, a metric that changes nothing in training).
  So TRL's defaults stand: batch 8, gradient checkpointing on, bf16 autocast, max_length 1024,
  random batches, no packing.
- ``uptake_recipe``: ``pipeline.train.train`` with examples/legal/recipe.yaml (its cpu profile:
  batch 16, no checkpointing, fp32, length-grouped batches, assistant-only loss), one epoch.

Each arm runs in its own process, so peak RSS is that arm's alone. tokens/s counts non-padding
tokens over the trainer's ``train_runtime``, the same definition for both; the best of the
repeats is kept (other processes on the machine only ever slow a run down). ``--ablation`` adds
single-knob variants of the defaults to show where the difference comes from.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LEGAL = REPO / "examples" / "legal"
RECIPE = LEGAL / "recipe.yaml"
EXAMPLES_PER_EPOCH = 640

# Variants of the defaults, each changing one knob (cumulative), for --ablation.
ABLATION: dict[str, dict[str, Any]] = {
    "defaults+no_ckpt": {"gradient_checkpointing": False},
    "defaults+no_ckpt+fp32": {"gradient_checkpointing": False, "bf16": False},
    "defaults+no_ckpt+fp32+grouped": {
        "gradient_checkpointing": False,
        "bf16": False,
        "train_sampling_strategy": "group_by_length",
    },
}


def _rows() -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (LEGAL / "train.jsonl").read_text().splitlines() if line]
    return [{"messages": r["messages"]} for r in rows]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_defaults(model: Path, out: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=str(out),
        num_train_epochs=1,
        use_cpu=True,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        **overrides,
    )
    trainer = SFTTrainer(model=str(model), args=args, train_dataset=Dataset.from_list(_rows()))
    metrics = trainer.train().metrics
    settings = {
        k: getattr(args, k)
        for k in (
            "per_device_train_batch_size",
            "gradient_checkpointing",
            "bf16",
            "max_length",
            "packing",
            "train_sampling_strategy",
            "optim",
            "assistant_only_loss",
        )
    }
    return {
        "steps": trainer.state.global_step,
        "tokens": int(trainer.state.num_input_tokens_seen),
        "train_runtime_s": float(metrics["train_runtime"]),
        "settings": settings,
    }


def run_recipe(model: Path, out: Path) -> dict[str, Any]:
    import yaml

    from pipeline.train import parse_recipe, train

    raw = yaml.safe_load(RECIPE.read_text())
    batch = raw["profiles"]["cpu"]["stages"]["sft"]["batch_size"]
    raw["profiles"]["cpu"]["stages"]["sft"]["max_steps"] = EXAMPLES_PER_EPOCH // batch  # 1 epoch
    recipe = parse_recipe(yaml.safe_dump(raw), source=RECIPE)
    result = train(model, recipe, out, profile="cpu")
    stage = result.stages[0]
    cfg = recipe.resolve("cpu").stages.sft
    return {
        "steps": stage.steps,
        "tokens": stage.session_tokens,
        "train_runtime_s": stage.train_runtime_s,
        "settings": {
            "per_device_train_batch_size": cfg.batch_size,
            "gradient_checkpointing": result.preflight["gradient_checkpointing"],
            "bf16": result.hardware["bf16"],
            "max_length": result.preflight["max_length"],
            "packing": result.preflight["packing"],
            "train_sampling_strategy": "group_by_length" if cfg.length_grouping else "random",
            "optim": result.hardware["optimizer"],
            "assistant_only_loss": cfg.assistant_only_loss,
        },
    }


def child(arm: str, model: Path, result_file: Path) -> None:
    """One arm, one run, in this (child) process; the parent reads ``result_file``."""
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        if arm == "uptake_recipe":
            out = run_recipe(model, Path(tmp) / "run")
        else:
            out = run_defaults(model, Path(tmp) / "run", ABLATION.get(arm, {}))
    out["arm"] = arm
    out["tokens_per_s"] = out["tokens"] / out["train_runtime_s"]
    out["peak_rss_mib"] = _peak_rss_mib()
    import torch

    out["torch_threads"] = torch.get_num_threads()
    result_file.write_text(json.dumps(out))


def _spawn(arm: str, model: Path, workdir: Path, threads: int | None) -> dict[str, Any]:
    result_file = workdir / f"{arm}-{time.monotonic_ns()}.json"
    cmd = [
        sys.executable,
        __file__,
        "--child",
        arm,
        "--model",
        str(model),
        "--result",
        str(result_file),
    ]
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{arm} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(result_file.read_text())


def _measure(
    arms: list[str], repeat: int, threads: int | None, console: Any
) -> dict[str, list[dict[str, Any]]]:
    """Every arm ``repeat`` times, interleaved (order reversed every other round), on one model."""
    from uptake.testing.tiny_models import TinyModelSpec, build_tiny_model

    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        corpus = [m["content"] for r in _rows() for m in r["messages"]]
        model = build_tiny_model(Path(tmp) / "model", TinyModelSpec(arch="llama"), corpus=corpus)
        for rep in range(repeat):
            order = arms if rep % 2 == 0 else list(reversed(arms))
            for arm in order:
                run = _spawn(arm, model, Path(tmp), threads)
                runs[arm].append(run)
                console.print(
                    f"rep {rep + 1} {arm:32s} {run['tokens_per_s']:9.0f} tok/s "
                    f"{run['peak_rss_mib']:7.0f} MiB peak RSS ({run['train_runtime_s']:.1f} s)"
                )
    return runs


def _summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Best run per arm, and its ratios to the defaults arm."""
    summary = {}
    for arm, arm_runs in runs.items():
        best = max(arm_runs, key=lambda r: r["tokens_per_s"])
        summary[arm] = {
            "tokens_per_s": round(best["tokens_per_s"], 1),
            "all_tokens_per_s": [round(r["tokens_per_s"], 1) for r in arm_runs],
            "peak_rss_mib": round(min(r["peak_rss_mib"] for r in arm_runs), 1),
            "steps": best["steps"],
            "tokens": best["tokens"],
            "train_runtime_s": round(best["train_runtime_s"], 2),
            "settings": best["settings"],
        }
    base = summary["trl_defaults"]
    for row in summary.values():
        row["speedup_vs_defaults"] = round(row["tokens_per_s"] / base["tokens_per_s"], 3)
        row["peak_rss_vs_defaults"] = round(row["peak_rss_mib"] / base["peak_rss_mib"], 3)
    return summary


def _print_table(console: Any, summary: dict[str, dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="uptake recipe vs TRL SFTTrainer defaults (CPU, tiny Llama, 1 epoch)")
    for col in ("arm", "tokens/s (best)", "all runs", "speed-up", "peak RSS MiB", "settings"):
        table.add_column(col)
    for arm, row in summary.items():
        s = row["settings"]
        table.add_row(
            arm,
            f"{row['tokens_per_s']:,.0f}",
            ", ".join(f"{x:,.0f}" for x in row["all_tokens_per_s"]),
            f"{row['speedup_vs_defaults']:.2f}x",
            f"{row['peak_rss_mib']:,.0f}",
            f"bs {s['per_device_train_batch_size']}, ckpt {s['gradient_checkpointing']}, "
            f"bf16 {s['bf16']}, {s['train_sampling_strategy']}",
        )
    console.print(table)
    ratio = summary["uptake_recipe"]["speedup_vs_defaults"]
    console.print(f"recipe / defaults tokens/s: [bold]{ratio:.2f}x[/] (target >= 1.3x)")


def _report(
    runs: dict[str, list[dict[str, Any]]],
    summary: dict[str, dict[str, Any]],
    repeat: int,
    load_before: tuple[float, float, float],
    wall_s: float,
) -> dict[str, Any]:
    """The JSON written to ``--out``: results plus the machine and versions they came from."""
    return {
        "benchmark": "train_cpu",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": runs["trl_defaults"][0]["torch_threads"],
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": _versions(),
        "model": "random tiny Llama (hidden 128, 2 layers, ~0.4M params), BPE 600 on the data",
        "data": "examples/legal/train.jsonl, 640 conversations, one epoch per run",
        "metric": "non-padding tokens / train_runtime; best of repeats; peak RSS per process",
        "repeat": repeat,
        "wall_s": round(wall_s, 1),
        "arms": summary,
        "recipe_vs_defaults_tokens_per_s": summary["uptake_recipe"]["speedup_vs_defaults"],
        "recipe_vs_defaults_peak_rss": summary["uptake_recipe"]["peak_rss_vs_defaults"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per arm, interleaved (best kept)"
    )
    parser.add_argument("--ablation", action="store_true", help="also run single-knob variants")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.model, args.result)
        return 0

    from rich.console import Console

    console = Console(width=150)
    arms = ["trl_defaults", "uptake_recipe"] + (list(ABLATION) if args.ablation else [])
    load_before = os.getloadavg()
    started = time.perf_counter()
    runs = _measure(arms, args.repeat, args.threads, console)
    summary = _summarise(runs)
    _print_table(console, summary)
    report = _report(runs, summary, args.repeat, load_before, time.perf_counter() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    return {p: md.version(p) for p in ("torch", "transformers", "trl", "peft", "accelerate")}


if __name__ == "__main__":
    sys.exit(main())

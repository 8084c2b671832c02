"""Shared builders for the training tests: templated memo data, recipes and odd model dirs."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

AREAS = {
    "immigration": ("INA 212(a)", "90 days"),
    "employment": ("Title VII", "180 days"),
    "tax": ("IRC 6501", "3 years"),
    "housing": ("FHA 3604", "1 year"),
}
CLIENTS = ["Ana", "Bo", "Cyrus", "Dina", "Emil", "Fay", "Gus", "Hana"]


REPO = Path(__file__).resolve().parents[2]


def memo_rows(n: int = 96, seed: int = 0) -> list[dict[str, Any]]:
    """Chat rows whose answers follow one template per practice area (learnable in seconds)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        area = rng.choice(sorted(AREAS))
        rule, deadline = AREAS[area]
        client = rng.choice(CLIENTS)
        extra = " The facts are in the letter." * rng.randint(0, 3)
        rows.append(
            {
                "id": f"t-{i}",
                "messages": [
                    {
                        "role": "user",
                        "content": f"Write a memo on a {area} matter for {client}.{extra}",
                    },
                    {
                        "role": "assistant",
                        "content": f"Memo to {client}. Rule: {rule}. Deadline: {deadline}. "
                        "We recommend filing promptly. No outcome is promised.",
                    },
                ],
            }
        )
    return rows


def preference_rows(n: int = 24, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        area = rng.choice(sorted(AREAS))
        rule, deadline = AREAS[area]
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"Write a memo on a {area} matter."}],
                "chosen": [
                    {"role": "assistant", "content": f"Rule: {rule}. Deadline: {deadline}."}
                ],
                "rejected": f"We guarantee you will win the {area} case.",
            }
        )
    return rows


def corpus(rows: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for r in rows for m in r["messages"]]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, val in over.items():
        out[key] = (
            _merge(out[key], val)
            if isinstance(val, dict) and isinstance(out.get(key), dict)
            else val
        )
    return out


def base_recipe(**over: Any) -> dict[str, Any]:
    """A small LoRA recipe for tests; ``over`` is deep-merged (``lora=None`` = full FT)."""
    recipe: dict[str, Any] = {
        "name": "test-recipe",
        "seed": 7,
        "max_length": 256,
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
        "stages": {
            "sft": {
                "data": "train.jsonl",
                "max_steps": 24,
                "learning_rate": 5e-3,
                "lr_scheduler": "constant",
                "warmup_ratio": 0.0,
                "batch_size": 8,
                "save_steps": 1000,
            }
        },
    }
    return _merge(recipe, over)


def write_recipe(directory: Path, rows: list[dict[str, Any]] | None = None, **over: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "train.jsonl").exists():
        write_jsonl(directory / "train.jsonl", rows if rows is not None else memo_rows())
    path = directory / "recipe.yaml"
    path.write_text(yaml.safe_dump(base_recipe(**over), sort_keys=False), encoding="utf-8")
    return path


def train_argv(model: Path, recipe: Path, out: Path, *extra: str) -> list[str]:
    """``uptake train`` arguments for a CPU run (after the program name)."""
    args = ["train", "--model", str(model), "--recipe", str(recipe), "--out", str(out)]
    return [*args, "--profile", "cpu", *extra]


def edit_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


REMOTE_CONFIG = """from transformers import LlamaConfig


class TinyFooConfig(LlamaConfig):
    model_type = "tinyfoo"
"""
REMOTE_MODELING = """from transformers import LlamaForCausalLM

from .configuration_tinyfoo import TinyFooConfig


class TinyFooForCausalLM(LlamaForCausalLM):
    config_class = TinyFooConfig
"""


def make_remote_code_model(model_dir: Path) -> Path:
    """Turn a tiny Llama dir into one that only loads with its own code (unknown model_type)."""
    edit_json(
        model_dir / "config.json",
        model_type="tinyfoo",
        architectures=["TinyFooForCausalLM"],
        auto_map={
            "AutoConfig": "configuration_tinyfoo.TinyFooConfig",
            "AutoModelForCausalLM": "modeling_tinyfoo.TinyFooForCausalLM",
        },
    )
    (model_dir / "configuration_tinyfoo.py").write_text(REMOTE_CONFIG, encoding="utf-8")
    (model_dir / "modeling_tinyfoo.py").write_text(REMOTE_MODELING, encoding="utf-8")
    return model_dir


def train_killed_after_checkpoint(
    model: Path, recipe: Path, out: Path, stage: str, step: int, log: Path
) -> int:
    """``uptake train`` in a child process, SIGKILLed (no cleanup, no final save) once ``stage``
    has a checkpoint at ``step`` or later; the step of the last checkpoint it left."""
    from pipeline.train.run_dir import last_checkpoint

    cmd = [sys.executable, "-m", "uptake.cli", *train_argv(model, recipe, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ckpt_dir = out / stage / "checkpoints"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            _wait_for_checkpoint(proc, ckpt_dir, step, timeout=240)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-2000:]
    assert not (out / stage / "done.json").exists()
    ckpt = last_checkpoint(ckpt_dir)
    assert ckpt is not None
    return int(json.loads((ckpt / "trainer_state.json").read_text())["global_step"])


def _wait_for_checkpoint(
    proc: subprocess.Popen[bytes], ckpt_dir: Path, step: int, timeout: float
) -> None:
    from pipeline.train.run_dir import last_checkpoint

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ckpt = last_checkpoint(ckpt_dir)
        if ckpt is not None and int(ckpt.name.split("-")[1]) >= step:
            return
        if proc.poll() is not None:
            raise AssertionError(
                f"training exited early ({proc.returncode}) before checkpoint {step}"
            )
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint {step} within {timeout}s")

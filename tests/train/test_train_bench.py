"""The GPU benchmark's logic, exercised on CPU with ``--smoke`` (the GPU run is done elsewhere)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_benchmark_smoke_runs_every_arm_on_cpu(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "bench/train_gpu.py", "--smoke", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "train_gpu.json").read_text())
    assert report["smoke"] is True and report["peak_bf16_matmul"]["tflops"] > 0
    arms = report["arms"]
    assert set(arms) == {"trl_defaults", "uptake_recipe", "uptake_recipe_lora"}
    n = report["model"]["params"]
    for name, arm in arms.items():
        assert "error" not in arm, arm
        assert arm["timed_steps"] == 2 and arm["timed_tokens"] == 2 * 2 * 128  # no padding
        assert arm["tokens_per_s"] > 0 and 0 < arm["mfu"] < arm["mfu_attn"]
        assert arm["flops_per_token"] == (4 if name.endswith("lora") else 6) * n
    # The arms differ the way the docstring says they do.
    assert arms["trl_defaults"]["settings"]["gradient_checkpointing"] is True
    assert arms["uptake_recipe"]["settings"]["gradient_checkpointing"] is False
    assert arms["uptake_recipe"]["settings"]["lora"] is False
    assert arms["uptake_recipe_lora"]["settings"]["lora"] is True
    assert arms["trl_defaults"]["speedup_vs_defaults"] == 1.0

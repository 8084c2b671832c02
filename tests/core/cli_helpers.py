"""Run the real ``uptake`` console script in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def uptake_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "uptake.cli", *args]


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The caller's env without any UPTAKE_* that could leak in, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPTAKE_")}
    env["UPTAKE_HOME"] = str(home)
    env.update(extra)
    return env


def run_uptake(
    *args: str, home: Path, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        uptake_argv(*args),
        env=clean_env(home, **env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )

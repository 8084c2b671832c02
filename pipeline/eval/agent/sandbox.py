"""``bash`` for the agent, only inside bubblewrap with no network.

The command sees the workspace at ``/work`` (``documents/`` read-only, ``output/`` writable),
``/usr`` read-only, a private ``/tmp``, and nothing else: no network namespace, no other
process, no home. Where ``bwrap`` is missing or cannot create namespaces (some containers),
``bash`` is simply not offered, and the run records why.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel

MAX_OUTPUT = 20_000


class SandboxStatus(BaseModel):
    available: bool
    reason: str  # why not (or the binary that runs it)


def _bwrap_args(binary: str, workspace: Path) -> list[str]:
    args = [
        binary,
        "--unshare-all",  # network, pid, ipc, uts, user namespaces: no network at all
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/bin:/bin",
        "--setenv",
        "HOME",
        "/work",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for name in ("bin", "lib", "lib64", "sbin"):
        if Path("/" + name).is_symlink():
            args += ["--symlink", f"usr/{name}", f"/{name}"]
        elif Path("/" + name).is_dir():
            args += ["--ro-bind", f"/{name}", f"/{name}"]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    args += ["--ro-bind", str(workspace), "/work"]
    output = workspace / "output"
    if output.is_dir():
        args += ["--bind", str(output), "/work/output"]
    return [*args, "--chdir", "/work"]


@lru_cache(maxsize=8)
def probe(binary: str = "bwrap") -> SandboxStatus:
    """Whether ``binary`` exists and can run a command in its sandbox here."""
    found = shutil.which(binary)
    if found is None:
        return SandboxStatus(
            available=False, reason=f"{binary} not found (apt-get install bubblewrap)"
        )
    probe_dir = Path("/tmp")
    try:
        done = subprocess.run(
            [*_bwrap_args(found, probe_dir)[:-2], "--chdir", "/", "/bin/sh", "-c", "true"],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return SandboxStatus(available=False, reason=f"{binary} cannot start: {exc}")
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()[:200]
        return SandboxStatus(available=False, reason=f"{binary} cannot sandbox here: {err}")
    return SandboxStatus(available=True, reason=found)


def run_sandboxed(binary: str, workspace: Path, command: str, timeout_s: float) -> str:
    """Run ``command`` with ``sh -c`` in the sandbox; its exit code and output as text."""
    args = [*_bwrap_args(binary, workspace), "/bin/sh", "-c", command]
    try:
        done = subprocess.run(args, capture_output=True, timeout=max(1.0, timeout_s))
    except subprocess.TimeoutExpired:
        return f"error: the command ran past {timeout_s:.0f}s and was stopped"
    out = (done.stdout + done.stderr).decode("utf-8", errors="replace")
    if len(out) > MAX_OUTPUT:
        out = out[:MAX_OUTPUT] + f"\n[... {len(out) - MAX_OUTPUT} more characters cut]"
    return f"exit code {done.returncode}\n{out}"

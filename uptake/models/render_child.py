"""A spare render child, started ahead of need.

A bounded render's child imports transformers' jinja renderer before it reads its request:
about 2 s of a process start on a 2-core machine, paid by every preflight and every model that
evaluation or serving prepares when the child is started on demand. A spare started right
after the previous one was taken does that import while its caller is busy elsewhere, so a
render costs its template's time. A taken child serves one template only: ``render_bounded``'s
renders once and exits, a ``TemplateRenderer``'s renders that template until it is closed (no
state passes from one untrusted template to the next). A spare belongs to the process that
started it: a forked process never takes its parent's, and the spare is killed at exit; one
whose parent died reads end-of-file and exits.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
from dataclasses import dataclass

_ARGV = (sys.executable, "-m", "uptake.models.template_child")


@dataclass(frozen=True)
class _Spare:
    proc: subprocess.Popen[str]
    owner: int  # the pid that started it


_spare: _Spare | None = None
_lock = threading.Lock()


def _start() -> subprocess.Popen[str]:
    return subprocess.Popen(
        _ARGV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )


def _usable(spare: _Spare | None) -> bool:
    return spare is not None and spare.owner == os.getpid() and spare.proc.poll() is None


def prewarm() -> None:
    """Have a spare ready for the next render (no-op when there is one)."""
    global _spare
    with _lock:
        if not _usable(_spare):
            _spare = _Spare(_start(), os.getpid())


def take() -> subprocess.Popen[str]:
    """A child for one request: the spare when there is one, else a new child; either way a
    new spare is started behind it."""
    global _spare
    with _lock:
        spare, _spare = _spare, None
    proc = spare.proc if spare is not None and _usable(spare) else _start()
    prewarm()
    return proc


@atexit.register
def _kill_spare() -> None:
    spare = _spare
    if spare is not None and spare.owner == os.getpid() and spare.proc.poll() is None:
        spare.proc.kill()
        spare.proc.communicate(timeout=5)  # reaps it and closes its pipes

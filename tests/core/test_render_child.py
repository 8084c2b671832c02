"""The spare render child: the next render takes a child that started (and imported) before
it was needed, each child renders once, and no spare outlives the process that started it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from uptake.models import render_child
from uptake.models.chat_templates import TemplateRenderError, chatml, render_bounded

MESSAGES = [{"role": "user", "content": "hi"}]


def _gone(pid: int, within_s: float = 10) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # our own child: reap it, or it lingers as a zombie
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        time.sleep(0.1)
    return False


def test_a_render_leaves_a_spare_that_the_next_render_takes() -> None:
    render_bounded(chatml(), [MESSAGES], add_generation_prompt=True)
    spare = render_child._spare
    assert spare is not None and spare.owner == os.getpid() and spare.proc.poll() is None
    (second,) = render_bounded(chatml(), [MESSAGES], add_generation_prompt=True)
    assert second.text and "<|im_start|>user\nhi" in second.text
    assert spare.proc.returncode == 0  # it rendered that request and exited
    assert render_child._spare is not None and render_child._spare.proc is not spare.proc


def test_a_spare_started_by_another_process_is_never_taken() -> None:
    render_child.prewarm()
    spare = render_child._spare
    assert spare is not None
    render_child._spare = render_child._Spare(spare.proc, owner=os.getpid() + 1)
    taken = render_child.take()
    try:
        assert taken is not spare.proc  # as a forked child would see its parent's spare
    finally:
        for proc in (taken, spare.proc):
            proc.kill()
            proc.wait(5)


def test_a_hostile_template_still_ends_its_child_with_the_sandbox_exit() -> None:
    hostile = "{% for i in range(10**9) %}x{% endfor %}"  # over the sandbox's range limit
    render_child.prewarm()  # warm: the child's CPU limit counts from its request, not its start
    with pytest.raises(TemplateRenderError, match="sandbox"):
        render_bounded(hostile, [MESSAGES], add_generation_prompt=False)


def test_the_spare_is_killed_when_its_process_exits() -> None:
    code = (
        "from uptake.models import render_child\n"
        "from uptake.models.chat_templates import chatml, render_bounded\n"
        "render_bounded(chatml(), [[{'role': 'user', 'content': 'x'}]],"
        " add_generation_prompt=True)\n"
        "print(render_child._spare.proc.pid, flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    pid = int(done.stdout.strip())
    assert _gone(pid), f"spare render child {pid} outlived its process"

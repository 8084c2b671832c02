"""Chat templates uptake ships, kept as ``.jinja`` files in ``templates/`` (as TRL keeps its own).

- ``chatml.jinja``: ChatML. The fallback prompt format for a tokenizer without a chat template
  (evaluation, serving) and the plain template of the tiny test models.
- ``chatml_training.jinja``: the same ChatML with ``{% generation %}`` markers around each
  assistant answer and its end-of-turn token. Assistant-only loss needs the markers; training
  installs it when a model has no template or a ChatML one without markers.

A new template is one more file in ``templates/`` and one name in ``TemplateName``.

A release's own template is untrusted code: jinja2's sandbox stops it from touching Python,
but not from looping for hours or building gigabytes of text, and a thread cannot be stopped,
so it renders where it can be killed. ``TemplateRenderer`` keeps one child process for one
template and bounds every render in it (time, CPU, memory, output); ``render_bounded`` is one
render in a child of its own (preflight). Generation (evaluation, serving) renders through
``uptake.models.generation``.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from functools import cache
from importlib.resources import files
from typing import Any, Literal

from pydantic import BaseModel

from uptake.errors import InputError
from uptake.models import render_child
from uptake.models.template_child import HOSTILE_EXIT, TOO_LARGE_EXIT

TemplateName = Literal["chatml", "chatml_training"]
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
CHATML_STOP_TEXTS = ("<|im_end|>", "<|im_start|>")


@cache
def chat_template(name: TemplateName) -> str:
    """The template's text, exactly as ``tokenizer.chat_template`` should hold it."""
    text = files("uptake.models").joinpath(f"templates/{name}.jinja").read_text("utf-8")
    return text.rstrip("\n")


def chatml() -> str:
    return chat_template("chatml")


def chatml_training() -> str:
    return chat_template("chatml_training")


# Wall time for one bounded render, the child's start included when no spare was warm: ~2 s on
# an idle machine, over 10 s on a loaded 2-core one (`uptake demo`'s valid template was refused
# there at 10 s). A looping template is stopped by the CPU bound too, which a busy machine does
# not eat into.
RENDER_TIMEOUT_S = 20.0
RENDER_CPU_S = 10.0  # CPU seconds of one render (RLIMIT_CPU in the child)
RENDER_TIMEOUT_PER_CONVERSATION_S = 0.005
MAX_RENDER_CHARS = 1_000_000  # one prompt; far above any model's context
MAX_RENDER_TOTAL_CHARS = 64_000_000
RENDER_MEMORY_BYTES = 2 << 30


class TemplateRenderError(InputError):
    """A chat template broke a bound (time, memory, output size): the model is refused."""


class Rendered(BaseModel):
    """One conversation's prompt text, or why the template rejected it."""

    text: str | None = None
    error: str | None = None


class TemplateRenderer:
    """Renders one template in a child process of its own, kept warm between renders.

    The child is taken from ``render_child``'s spare (already imported) and then serves only
    this template, so after the first render a render costs its template's time and a pipe
    round trip, not a process start. Every render is bounded as ``render_bounded`` describes:
    a render that breaks a bound raises ``TemplateRenderError``, its child is killed and the
    next render takes a new one. Nothing passes between renders (template_child.py). Safe to
    share between threads (one render at a time); ``close`` ends the child, and a forked
    process never uses its parent's.
    """

    def __init__(self, template: str, variables: dict[str, Any] | None = None) -> None:
        self.template = template
        self.variables = dict(variables or {})
        self._child: subprocess.Popen[str] | None = None
        self._owner = os.getpid()
        self._lock = threading.Lock()

    def render(
        self,
        conversations: list[list[dict[str, Any]]],
        *,
        add_generation_prompt: bool | Sequence[bool],
        timeout_s: float | None = None,
        max_chars: int = MAX_RENDER_CHARS,
        tools: Sequence[list[dict[str, Any]] | None] | None = None,
    ) -> list[Rendered]:
        """One prompt text (or the template's error) per conversation; ``add_generation_prompt``
        is one flag for all or one per conversation, ``tools`` each conversation's tool
        definitions (rendered as the template's ``tools``). Raises ``TemplateRenderError`` when a
        bound is broken: ``timeout_s`` of wall time (default ``RENDER_TIMEOUT_S`` and a little
        per conversation), ``RENDER_CPU_S`` of CPU, ``RENDER_MEMORY_BYTES``, ``max_chars`` of
        text for one prompt."""
        extra_s = RENDER_TIMEOUT_PER_CONVERSATION_S * len(conversations)
        if timeout_s is None:
            timeout_s = RENDER_TIMEOUT_S + extra_s
        flags = (
            [add_generation_prompt] * len(conversations)
            if isinstance(add_generation_prompt, bool)
            else list(add_generation_prompt)
        )
        cpu_s = int(min(timeout_s, RENDER_CPU_S + extra_s)) + 1
        request = {
            "template": self.template,
            "conversations": conversations,
            "add_generation_prompt": flags,
            "tools": list(tools) if tools is not None else [None] * len(conversations),
            "variables": self.variables,
            "max_chars": max_chars,
            "max_total_chars": MAX_RENDER_TOTAL_CHARS,
            "memory_bytes": RENDER_MEMORY_BYTES,
            "cpu_s": cpu_s,
        }
        with self._lock:
            child = self._warm_child()
            answer = _ask(child, json.dumps(request) + "\n", timeout_s)
            if answer is None:  # the child ended: its exit code says why
                self._child = None
                raise _refusal(child, max_chars, cpu_s)
        return [Rendered.model_validate(r) for r in json.loads(answer)]

    @property
    def pid(self) -> int | None:
        """The child's process id; None before the first render or after ``close``."""
        child = self._child
        return child.pid if child is not None else None

    def close(self) -> None:
        """End the child (it exits on end of input) and reap it."""
        with self._lock:
            child, self._child = self._child, None
        if child is not None and self._owner == os.getpid():
            try:
                child.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.communicate()

    def __enter__(self) -> TemplateRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _warm_child(self) -> subprocess.Popen[str]:
        if self._owner != os.getpid():  # forked: the parent's child is not ours to write to
            self._owner, self._child = os.getpid(), None
        if self._child is None or self._child.poll() is not None:
            self._child = render_child.take()
        return self._child


def _ask(child: subprocess.Popen[str], line: str, timeout_s: float) -> str | None:
    """Send one request line and read the answer line within ``timeout_s``; None when the
    child ended first. At the deadline the child is killed and the render refused."""
    assert child.stdin is not None and child.stdout is not None
    try:
        child.stdin.write(line)
        child.stdin.flush()
    except BrokenPipeError:
        return None
    deadline = time.monotonic() + timeout_s
    fd = child.stdout.fileno()
    answer = bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not answer.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                child.kill()
                child.communicate()
                raise TemplateRenderError(
                    f"the chat template did not render within {timeout_s:g} s"
                )
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            answer += chunk
    return answer.decode("utf-8")


def _refusal(child: subprocess.Popen[str], max_chars: int, cpu_s: int) -> TemplateRenderError:
    """Why a child ended without answering, from its exit code and last line of stderr."""
    try:
        _, stderr = child.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        child.kill()
        _, stderr = child.communicate()
    code = child.returncode
    if code == TOO_LARGE_EXIT:
        return TemplateRenderError(
            f"the chat template rendered more than {max_chars:,} characters for one prompt"
        )
    last = ((stderr or "").strip().splitlines() or [f"exit code {code}"])[-1][:300]
    if code == HOSTILE_EXIT:
        return TemplateRenderError(
            f"the chat template broke the sandbox's bounds ({RENDER_MEMORY_BYTES >> 20} MiB of "
            f"memory, ranges of 100,000): {last}"
        )
    if code == -signal.SIGXCPU:
        return TemplateRenderError(f"the chat template used more than {cpu_s} s of CPU")
    return TemplateRenderError(f"the chat template could not be rendered: {last}")


def render_bounded(
    template: str,
    conversations: list[list[dict[str, Any]]],
    *,
    add_generation_prompt: bool | Sequence[bool],
    variables: dict[str, Any] | None = None,
    timeout_s: float | None = None,
    max_chars: int = MAX_RENDER_CHARS,
) -> list[Rendered]:
    """Render ``template`` once for each conversation in a child process of its own, bounded
    as ``TemplateRenderer.render`` says, and end the child. ``variables`` are the tokenizer's
    special tokens (``bos_token``...), as ``apply_chat_template`` passes them. Raises
    ``TemplateRenderError`` when a bound is broken.
    """
    with TemplateRenderer(template, variables) as renderer:
        return renderer.render(
            conversations,
            add_generation_prompt=add_generation_prompt,
            timeout_s=timeout_s,
            max_chars=max_chars,
        )

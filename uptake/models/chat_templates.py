"""Chat templates uptake ships, kept as ``.jinja`` files in ``templates/`` (as TRL keeps its own).

- ``chatml.jinja``: ChatML. The fallback prompt format for a tokenizer without a chat template
  (evaluation, serving) and the plain template of the tiny test models.
- ``chatml_training.jinja``: the same ChatML with ``{% generation %}`` markers around each
  assistant answer and its end-of-turn token. Assistant-only loss needs the markers; training
  installs it when a model has no template or a ChatML one without markers.

A new template is one more file in ``templates/`` and one name in ``TemplateName``.

``render_bounded`` renders a release's own template (untrusted) in a child process with a time,
memory and output bound; preflight and evaluation render through it.
"""

from __future__ import annotations

import json
import subprocess
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


def render_bounded(
    template: str,
    conversations: list[list[dict[str, Any]]],
    *,
    add_generation_prompt: bool | Sequence[bool],
    variables: dict[str, Any] | None = None,
    timeout_s: float | None = None,
    max_chars: int = MAX_RENDER_CHARS,
) -> list[Rendered]:
    """Render ``template`` for each conversation in a child process with bounded time, memory
    (``RENDER_MEMORY_BYTES``) and output (``max_chars`` each).

    A chat template comes with a release and is untrusted code: jinja2's sandbox stops it
    from touching Python, but not from looping for hours or building gigabytes of text, and a
    thread cannot be stopped, so the render runs where it can be killed. ``variables`` are the
    tokenizer's special tokens (``bos_token``...), as ``apply_chat_template`` passes them;
    ``add_generation_prompt`` is one flag for all conversations or one per conversation.
    Raises ``TemplateRenderError`` when a bound is broken.
    """
    extra_s = RENDER_TIMEOUT_PER_CONVERSATION_S * len(conversations)
    if timeout_s is None:
        timeout_s = RENDER_TIMEOUT_S + extra_s
    request = {
        "template": template,
        "conversations": conversations,
        "add_generation_prompt": (
            [add_generation_prompt] * len(conversations)
            if isinstance(add_generation_prompt, bool)
            else list(add_generation_prompt)
        ),
        "variables": variables or {},
        "max_chars": max_chars,
        "max_total_chars": MAX_RENDER_TOTAL_CHARS,
        "memory_bytes": RENDER_MEMORY_BYTES,
        "cpu_s": int(min(timeout_s, RENDER_CPU_S + extra_s)) + 1,
    }
    child = render_child.take()
    try:
        stdout, stderr = child.communicate(json.dumps(request), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise TemplateRenderError(
            f"the chat template did not render within {timeout_s:g} s"
        ) from None
    done = subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
    if done.returncode == TOO_LARGE_EXIT:
        raise TemplateRenderError(
            f"the chat template rendered more than {max_chars:,} characters for one prompt"
        )
    last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1][:300]
    if done.returncode == HOSTILE_EXIT:
        raise TemplateRenderError(
            f"the chat template broke the sandbox's bounds ({RENDER_MEMORY_BYTES >> 20} MiB of "
            f"memory, ranges of 100,000): {last}"
        )
    if done.returncode != 0:
        raise TemplateRenderError(f"the chat template could not be rendered: {last}")
    return [Rendered.model_validate(r) for r in json.loads(done.stdout)]

"""The child process of a bounded render: renders chat templates read from stdin as JSON.

Run as ``python -m uptake.models.template_child``; it imports the renderer, then reads requests,
one JSON object a line, and answers each with one JSON line (so a spare started ahead is warm:
``render_child.py``, and a ``TemplateRenderer`` keeps one child for its template's renders).
Before each template run it limits its own memory and CPU time, and the parent kills it at its
wall-time limit; end of input ends it. It renders with transformers' own
``render_jinja_template`` (a jinja2 ``ImmutableSandboxedEnvironment``: a template can change
no object it is given, so nothing passes from one render to the next), so the text is the one
``apply_chat_template`` gives. Each
conversation is rendered alone: one that the template rejects gets its error, the others their
text. A text over ``max_chars`` (or all of them over ``max_total_chars``) ends the child with
exit code 3, and a template that runs out of memory or trips the sandbox (a range over its
``MAX_RANGE``, an unsafe attribute) with exit code 4: such a template is refused whatever it
was given.
"""

from __future__ import annotations

import json
import sys
from typing import Any

TOO_LARGE_EXIT = 3
HOSTILE_EXIT = 4


def _render_one(
    request: dict[str, Any],
    conversation: list[dict[str, Any]],
    gen: bool,
    tools: list[dict[Any, Any]] | None,
) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    # annotated ``-> str``; it returns (texts, generation indices)
    output: Any = render_jinja_template(
        conversations=[conversation],
        tools=list(tools) if tools else None,
        chat_template=request["template"],
        add_generation_prompt=gen,
        **request["variables"],
    )
    return str(output[0][0])


def _limit(memory_bytes: int, cpu_s: int) -> None:
    """Bound this process before the template runs (the parent also kills it at its timeout).
    The CPU limit counts from now, for this request: the import and earlier requests are not
    this render's. Past it the kernel sends SIGXCPU, which ends the process."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = int(usage.ru_utime + usage.ru_stime) + 1
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = used + cpu_s if hard == resource.RLIM_INFINITY else min(used + cpu_s, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _answer(request: dict[str, Any]) -> int:
    """Render one request and write its answer line; an exit code when the template is refused."""
    results: list[dict[str, str]] = []
    total = 0
    tools = request.get("tools") or [None] * len(request["conversations"])
    for conversation, gen, its_tools in zip(
        request["conversations"], request["add_generation_prompt"], tools, strict=True
    ):
        try:
            text = _render_one(request, conversation, gen, its_tools)
        except (MemoryError, OverflowError) as exc:
            sys.stderr.write(f"{type(exc).__name__}: {str(exc)[:300]}\n")
            return HOSTILE_EXIT
        except Exception as exc:  # a template may raise on anything (raise_exception, bad keys)
            if type(exc).__name__ == "SecurityError":  # jinja2.sandbox refused an operation
                sys.stderr.write(f"SecurityError: {str(exc)[:300]}\n")
                return HOSTILE_EXIT
            results.append({"error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            continue
        total += len(text)
        if len(text) > request["max_chars"] or total > request["max_total_chars"]:
            sys.stderr.write(f"rendered {max(len(text), total):,} characters\n")
            return TOO_LARGE_EXIT
        results.append({"text": text})
    sys.stdout.write(json.dumps(results) + "\n")
    sys.stdout.flush()
    return 0


def main() -> int:
    # imported before the request arrives: a spare child (render_child.py) is warm when taken
    import transformers.utils.chat_template_utils  # noqa: F401

    while line := sys.stdin.readline():  # end of input: the parent is done (or gone)
        request = json.loads(line)
        _limit(request["memory_bytes"], request["cpu_s"])
        code = _answer(request)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tool calls in a model's output: one parser for serving and evaluation.

An open-weight model calls a tool by writing text in a format its chat template taught it; an
OpenAI client expects ``message.tool_calls``. This module turns the one into the other, for
the formats common among open models:

- ``hermes``: ``<tool_call>{"name": …, "arguments": {…}}</tool_call>`` (Hermes, Qwen 2.5/3,
  SmolLM3…), one block per call; a block whose body is a ``<function=…>`` tag (Qwen3-Coder)
  is read as ``function_tag`` below;
- ``mistral``: ``[TOOL_CALLS][{"name": …, "arguments": {…}}, …]`` (before tokenizer v11) or
  ``[TOOL_CALLS]name{…}`` / ``[TOOL_CALLS]name[ARGS]{…}`` (v11 on), one marker per call;
- ``llama3_json``: the whole answer is ``{"name": …, "parameters": {…}}`` (Llama 3.1–3.3's JSON
  tool calling; ``arguments`` also accepted), optionally after ``<|python_tag|>``, several
  joined by ``;``;
- ``function_tag``: ``<function=name>{…}</function>`` (Llama 3.1's custom format) or
  ``<function=name><parameter=key>value</parameter>…</function>`` (Qwen3-Coder).

``detect_format`` reads the format from a chat template's text (the template shows the model
how a call looks); ``parse_tool_calls`` reads calls from a finished answer (``None`` as format:
every format is tried); ``ToolCallStream`` says how much of a growing answer is plain content
that can be streamed before a call begins; ``forced_prefix`` is the text that starts a call
when the client demands one (``tool_choice`` naming a function, or ``required``), so the model
writes only the arguments. A model's answer is untrusted text: nothing here evaluates it,
a malformed call is left as content, and the arguments of a call are always a JSON text.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ToolCallFormat = Literal["hermes", "mistral", "llama3_json", "function_tag"]
FORMATS: tuple[ToolCallFormat, ...] = ("hermes", "mistral", "function_tag", "llama3_json")

HERMES_START, HERMES_END = "<tool_call>", "</tool_call>"
MISTRAL_START, MISTRAL_ARGS = "[TOOL_CALLS]", "[ARGS]"
PYTHON_TAG = "<|python_tag|>"
FUNCTION_START, FUNCTION_END = "<function=", "</function>"
# the text that opens a call in each format (llama3_json: an answer that begins with "{")
START_MARKERS: dict[ToolCallFormat, tuple[str, ...]] = {
    "hermes": (HERMES_START,),
    "mistral": (MISTRAL_START,),
    "function_tag": (FUNCTION_START,),
    "llama3_json": (PYTHON_TAG,),
}
# special tokens a decoder must keep for the calls to be visible in the text
MARKER_TOKENS = (HERMES_START, HERMES_END, MISTRAL_START, MISTRAL_ARGS, PYTHON_TAG)

_PARAMETER = re.compile(r"<parameter=([^>\n]+)>\n?(.*?)\n?</parameter>", re.DOTALL)


class ToolCall(BaseModel):
    """One call: the function's name and its arguments as JSON text (OpenAI's shape)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    arguments: str = "{}"
    id: str = Field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")


class ParsedAnswer(BaseModel):
    """An answer split into its plain content (None when it was only calls) and its calls."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()


def template_supports_tools(template: str) -> bool:
    """Whether a chat template renders the ``tools`` it is given (it names the variable)."""
    return re.search(r"\btools\b", template) is not None


def detect_format(template: str) -> ToolCallFormat | None:
    """The call format a chat template teaches its model; None when it shows none."""
    if MISTRAL_START in template:
        return "mistral"
    if HERMES_START in template:
        return "hermes"
    if FUNCTION_START in template:
        return "function_tag"
    if PYTHON_TAG in template or re.search(r"""["']parameters["']""", template):
        return "llama3_json"
    return None


def forced_prefix(fmt: ToolCallFormat, name: str | None) -> str:
    """The text that starts a call of ``name`` (None: a call of the model's choosing) in
    ``fmt``; the model continues with the arguments (or the name)."""
    if fmt == "function_tag":
        return FUNCTION_START + (f"{name}>" if name is not None else "")
    key = "parameters" if fmt == "llama3_json" else "arguments"
    head = '{"name": ' + (f"{json.dumps(name)}, {json.dumps(key)}: " if name is not None else '"')
    if fmt == "hermes":
        return f"{HERMES_START}\n{head}"
    if fmt == "mistral":
        return f"{MISTRAL_START}[{head}"
    return head


# -- parsing ------------------------------------------------------------------------------


def _content(text: str) -> str | None:
    """The text before the calls, as written; None when it is blank."""
    return text if text.strip() else None


def _arguments(value: Any) -> str | None:
    """Arguments as JSON text: an object is dumped, a string must already hold JSON."""
    if value is None:
        return "{}"
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return None
        return value
    return None


def _call(obj: Any, *keys: str) -> ToolCall | None:
    """A call from a decoded ``{"name": …, "arguments"/"parameters": …}`` object."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    value = next((obj[k] for k in keys if k in obj), None)
    arguments = _arguments(value)
    return None if arguments is None else ToolCall(name=obj["name"], arguments=arguments)


def _json_values(text: str) -> list[Any] | None:
    """Every JSON value in ``text``, one after the other (separated by blanks, ``;`` or
    ``,``); None when anything else is there."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    i = 0
    while True:
        while i < len(text) and text[i] in " \t\r\n;,":
            i += 1
        if i == len(text):
            return values
        try:
            value, i = decoder.raw_decode(text, i)
        except ValueError:
            return None
        values.append(value)


def _function_tag(body: str) -> ToolCall | None:
    """``name>{json}`` or ``name>`` followed by ``<parameter=…>`` blocks (the ``<function=``
    already taken off, the closing tag too)."""
    name, sep, rest = body.partition(">")
    name = name.strip()
    if not sep or not name or "\n" in name:
        return None
    rest = rest.strip()
    if not rest:
        return ToolCall(name=name)
    if rest.startswith("{"):
        values = _json_values(rest)
        if values is None or len(values) != 1 or not isinstance(values[0], dict):
            return None
        return ToolCall(name=name, arguments=json.dumps(values[0], ensure_ascii=False))
    params = {}
    for key, raw in _PARAMETER.findall(rest):
        try:
            params[key.strip()] = json.loads(raw)
        except ValueError:
            params[key.strip()] = raw
    if not params:
        return None
    return ToolCall(name=name, arguments=json.dumps(params, ensure_ascii=False))


def _hermes(text: str) -> ParsedAnswer | None:
    start = text.find(HERMES_START)
    if start < 0:
        return None
    calls: list[ToolCall] = []
    i = start
    while i >= 0:
        body_at = i + len(HERMES_START)
        end = text.find(HERMES_END, body_at)
        body = text[body_at : end if end >= 0 else len(text)].strip()
        found: list[ToolCall | None] | None
        if body.startswith(FUNCTION_START):
            found = [_function_tag(body[len(FUNCTION_START) :].removesuffix(FUNCTION_END))]
        else:
            values = _json_values(body)
            found = [_call(v, "arguments", "parameters") for v in values] if values else None
        if not found or any(c is None for c in found):
            return None  # one malformed block: the answer stays content, as written
        calls.extend(c for c in found if c is not None)
        if end < 0:
            break
        i = text.find(HERMES_START, end + len(HERMES_END))
        if i < 0 and text[end + len(HERMES_END) :].strip():
            return None  # prose after the calls: not a clean call answer
    return ParsedAnswer(content=_content(text[:start]), tool_calls=tuple(calls))


def _mistral(text: str) -> ParsedAnswer | None:
    start = text.find(MISTRAL_START)
    if start < 0:
        return None
    calls: list[ToolCall] = []
    for part in text[start + len(MISTRAL_START) :].split(MISTRAL_START):
        part = part.strip()
        if part.startswith("["):  # before v11: a JSON list of calls
            values = _json_values(part)
            if not values or not all(isinstance(v, list) for v in values):
                return None
            found = [_call(obj, "arguments", "parameters") for v in values for obj in v]
        else:  # v11 on: name{…} or name[ARGS]{…}
            name, sep, args = part.partition(MISTRAL_ARGS)
            if not sep:
                brace = part.find("{")
                name, args = (part[:brace], part[brace:]) if brace > 0 else (part, "{}")
            values = _json_values(args)
            obj = {"name": name.strip(), "arguments": values[0] if values else None}
            found = [_call(obj, "arguments")] if values and len(values) == 1 else [None]
        if not found or any(c is None for c in found):
            return None
        calls.extend(c for c in found if c is not None)
    return ParsedAnswer(content=_content(text[:start]), tool_calls=tuple(calls))


def _function_tags(text: str) -> ParsedAnswer | None:
    start = text.find(FUNCTION_START)
    if start < 0:
        return None
    calls: list[ToolCall] = []
    for part in text[start:].split(FUNCTION_START)[1:]:
        body, _, after = part.partition(FUNCTION_END)
        call = _function_tag(body)
        if call is None or after.strip():
            return None
        calls.append(call)
    return ParsedAnswer(content=_content(text[:start]), tool_calls=tuple(calls))


def _llama3_json(text: str) -> ParsedAnswer | None:
    body = text.strip().removeprefix(PYTHON_TAG).strip()
    if not body.startswith(("{", "[")):
        return None
    values = _json_values(body)
    if not values:
        return None
    objects = [o for v in values for o in (v if isinstance(v, list) else [v])]
    calls = [_call(o, "parameters", "arguments") for o in objects]
    if not calls or any(c is None for c in calls):
        return None
    return ParsedAnswer(content=None, tool_calls=tuple(c for c in calls if c is not None))


_PARSERS = {
    "hermes": _hermes,
    "mistral": _mistral,
    "function_tag": _function_tags,
    "llama3_json": _llama3_json,
}


def parse_tool_calls(text: str, fmt: ToolCallFormat | None = None) -> ParsedAnswer:
    """``text`` as content and calls in ``fmt`` (None: the first format that finds calls). An
    answer without a well-formed call is all content."""
    for name in (fmt,) if fmt is not None else FORMATS:
        parsed = _PARSERS[name](text)
        if parsed is not None and parsed.tool_calls:
            return parsed
    return ParsedAnswer(content=text)


# -- streaming ----------------------------------------------------------------------------


class ToolCallStream:
    """How much of a growing answer is content that can be sent before a call begins.

    Text from the first call marker on (and a partial marker at the end, which may still
    become one) is held back until the answer is complete; then ``parse_tool_calls`` reads the
    whole of it. For ``llama3_json`` an answer that begins with ``{`` (or is still blank) is a
    call in the making. ``prefix`` is a forced call's start: everything is held.
    """

    def __init__(self, fmt: ToolCallFormat | None, prefix: str = "") -> None:
        self.fmt = fmt
        self.prefix = prefix
        formats = (fmt,) if fmt is not None else FORMATS
        self.markers = tuple(m for f in formats for m in START_MARKERS[f])
        self._json_open = "llama3_json" in formats  # undecided: may still be a JSON call
        self._held_from: int | None = 0 if prefix else None  # where the first call begins
        self._scanned = 0  # characters already searched for a marker

    def safe_upto(self, text: str) -> int:
        """Characters of ``text`` (the answer so far, without prefix, only ever growing) that
        are plain content. Each call searches only what is new, so a whole answer costs time
        linear in its length."""
        if self._held_from is not None:
            return self._held_from
        if self._json_open:
            stripped = text.lstrip()
            if not stripped or PYTHON_TAG.startswith(stripped):
                return 0  # blank so far, or maybe the start of <|python_tag|>
            self._json_open = False
            if stripped[0] in "{[" or stripped.startswith(PYTHON_TAG):
                self._held_from = 0
                return 0
        upto = len(text)
        for marker in self.markers:
            found = text.find(marker, max(0, self._scanned - len(marker) + 1))
            if found >= 0:
                self._held_from = found if self._held_from is None else min(found, self._held_from)
            else:
                upto = min(upto, len(text) - _partial(text, marker))
        self._scanned = len(text)
        return upto if self._held_from is None else self._held_from

    def finish(self, text: str) -> ParsedAnswer:
        """The whole answer (without prefix) as content and calls."""
        return parse_tool_calls(self.prefix + text, self.fmt)


def _partial(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that begins ``marker`` (markers are short)."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0

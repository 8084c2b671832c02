"""The tool-call parser shared by serving and evaluation (``uptake.models.tool_calls``): each
common format read into calls, the format told from a chat template, a forced call's prefix,
and how much of a growing answer a stream may send before a call begins."""

from __future__ import annotations

import json

import pytest

from uptake.models.tool_calls import (
    ToolCallStream,
    detect_format,
    forced_prefix,
    parse_tool_calls,
    template_supports_tools,
)

WEATHER = {"city": "Paris", "unit": "celsius"}


def calls(text: str, fmt=None) -> list[tuple[str, dict]]:
    return [(c.name, json.loads(c.arguments)) for c in parse_tool_calls(text, fmt).tool_calls]


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        (
            "hermes",
            f'<tool_call>\n{{"name": "weather", "arguments": {json.dumps(WEATHER)}}}\n</tool_call>',
        ),
        ("mistral", f'[TOOL_CALLS][{{"name": "weather", "arguments": {json.dumps(WEATHER)}}}]'),
        ("mistral", f"[TOOL_CALLS]weather[ARGS]{json.dumps(WEATHER)}"),
        ("mistral", f"[TOOL_CALLS]weather{json.dumps(WEATHER)}"),
        ("llama3_json", f'{{"name": "weather", "parameters": {json.dumps(WEATHER)}}}'),
        (
            "llama3_json",
            f'<|python_tag|>{{"name": "weather", "parameters": {json.dumps(WEATHER)}}}',
        ),
        ("function_tag", f"<function=weather>{json.dumps(WEATHER)}</function>"),
        (
            "hermes",  # Qwen3-Coder: a <function=…> tag with <parameter=…> blocks in the block
            "<tool_call>\n<function=weather>\n<parameter=city>\nParis\n</parameter>\n"
            "<parameter=unit>\ncelsius\n</parameter>\n</function>\n</tool_call>",
        ),
    ],
)
def test_each_format_gives_the_call(fmt: str, text: str) -> None:
    assert calls(text, fmt) == [("weather", WEATHER)]
    assert calls(text) == [("weather", WEATHER)]  # found without naming the format too
    parsed = parse_tool_calls(text, fmt)
    assert parsed.content is None
    assert all(c.id.startswith("call_") for c in parsed.tool_calls)


def test_several_calls_and_text_before_them() -> None:
    hermes = (
        "Let me check both.\n"
        '<tool_call>{"name": "a", "arguments": {}}</tool_call>\n'
        '<tool_call>{"name": "b", "arguments": {"x": 1}}</tool_call>'
    )
    parsed = parse_tool_calls(hermes, "hermes")
    assert parsed.content == "Let me check both.\n"
    assert [(c.name, c.arguments) for c in parsed.tool_calls] == [("a", "{}"), ("b", '{"x": 1}')]
    assert len({c.id for c in parsed.tool_calls}) == 2
    llama = '{"name": "a", "parameters": {}}; {"name": "b", "parameters": {"x": 1}}'
    assert calls(llama, "llama3_json") == [("a", {}), ("b", {"x": 1})]
    mistral = '[TOOL_CALLS]a{}[TOOL_CALLS]b{"x": 1}'
    assert calls(mistral, "mistral") == [("a", {}), ("b", {"x": 1})]


@pytest.mark.parametrize(
    "text",
    [
        "The deadline is thirty days.",
        "<tool_call>{not json}</tool_call>",
        '<tool_call>{"arguments": {}}</tool_call>',  # no name
        '<tool_call>{"name": "a", "arguments": {}}</tool_call> and then some prose',
        '{"name": "a", "parameters": "not json text"}',
        "[TOOL_CALLS][1, 2]",
        "<function=>{}</function>",
        '{"answer": 42}',
    ],
)
def test_a_malformed_or_absent_call_leaves_the_answer_as_content(text: str) -> None:
    parsed = parse_tool_calls(text)
    assert parsed.tool_calls == () and parsed.content == text


def test_arguments_given_as_json_text_stay_that_text() -> None:
    text = '<tool_call>{"name": "a", "arguments": "{\\"x\\": 1}"}</tool_call>'
    assert parse_tool_calls(text).tool_calls[0].arguments == '{"x": 1}'


def test_the_format_is_read_from_the_template() -> None:
    qwen = "{% if tools %}{{ tools | tojson }} reply in <tool_call></tool_call>{% endif %}"
    assert detect_format(qwen) == "hermes" and template_supports_tools(qwen)
    assert detect_format("{{ '[TOOL_CALLS]' }}{% if tools %}{% endif %}") == "mistral"
    assert detect_format("{% if tools %}<|python_tag|>{% endif %}") == "llama3_json"
    assert detect_format("{% if tools %}<function=example>{% endif %}") == "function_tag"
    chatml = "{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}"
    assert detect_format(chatml) is None and not template_supports_tools(chatml)


@pytest.mark.parametrize("fmt", ["hermes", "mistral", "llama3_json", "function_tag"])
def test_a_forced_prefix_and_the_models_rest_parse_as_that_call(fmt: str) -> None:
    prefix = forced_prefix(fmt, "weather")  # type: ignore[arg-type]
    rest = {
        "hermes": f"{json.dumps(WEATHER)}}}\n</tool_call>",
        "mistral": f"{json.dumps(WEATHER)}}}]",
        "llama3_json": f"{json.dumps(WEATHER)}}}",
        "function_tag": f"{json.dumps(WEATHER)}</function>",
    }[fmt]
    stream = ToolCallStream(fmt, prefix)  # type: ignore[arg-type]
    assert stream.safe_upto(rest[:5]) == 0  # a forced call: nothing is content
    assert [(c.name, json.loads(c.arguments)) for c in stream.finish(rest).tool_calls] == [
        ("weather", WEATHER)
    ]
    required = forced_prefix(fmt, None)  # type: ignore[arg-type]
    assert prefix.startswith(required)


def test_a_stream_sends_the_text_before_a_call_and_holds_a_partial_marker() -> None:
    stream = ToolCallStream("hermes")
    assert stream.safe_upto("Let me") == 6
    assert stream.safe_upto("Let me check <tool") == len("Let me check ")
    answer = 'Let me check <tool_call>{"name": "a", "arguments": {}}</tool_call>'
    assert stream.safe_upto(answer) == len("Let me check ")
    assert stream.safe_upto(answer + " more") == len("Let me check ")  # held from the call on
    parsed = stream.finish(answer)
    assert parsed.content == "Let me check " and parsed.tool_calls[0].name == "a"


def test_a_stream_holds_an_answer_that_begins_as_json_when_the_format_allows_it() -> None:
    unknown = ToolCallStream(None)  # any format: a leading "{" may be a llama3_json call
    assert unknown.safe_upto("  ") == 0
    assert unknown.safe_upto('  {"name"') == 0
    assert unknown.finish('{"answer": 1}').content == '{"answer": 1}'  # not a call: content
    hermes = ToolCallStream("hermes")
    assert hermes.safe_upto('{"x": 1}') == len('{"x": 1}')

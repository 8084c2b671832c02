"""OpenAI tool calls through ``uptake serve``, driven by the official ``openai`` client unchanged:
``tools`` and ``tool_choice`` (auto, none, a named function), non-streaming and streaming,
``role: "tool"`` messages, and a 400 for a model whose template has no tool support.

The champion is the scripted tiny model (``scripted_model.py``): whatever it is asked, it
answers ``<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>``,
in the Hermes format its own chat template (rendered in the bounded child) teaches.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.service import ServingService
from tests.conftest import MlflowServer
from tests.serving.conftest import running, serving_settings
from tests.serving.helpers import Registrar, wait_for
from tests.serving.scripted_model import ARGUMENTS, TOOL, TOOLS, build_scripted_model

# what this module tests does not depend on the MLflow store: one store (README "Tests")
pytestmark = pytest.mark.one_backend

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:6]
    return {"tools": f"tools-{tag}", "plain": f"plain-{tag}"}


@pytest.fixture(scope="module")
def server(
    broker: str,
    mlflow_server: MlflowServer,
    tmp_path_factory: pytest.TempPathFactory,
    registrar: Registrar,
    models_dir: dict[str, Path],
    names: dict[str, str],
) -> Iterator[ServingService]:
    scripted = build_scripted_model(tmp_path_factory.mktemp("scripted") / "model")
    registrar.crown(names["tools"], registrar.register(names["tools"], scripted))
    registrar.crown(names["plain"], registrar.register(names["plain"], models_dir["a"]))
    settings = serving_settings(broker, mlflow_server, tmp_path_factory.mktemp("home"))
    for service in running(settings, list(names.values())):
        for name in names.values():
            wait_for(lambda s=service, n=name: s.manager.current(n), what=f"{name} loaded")
        yield service


@pytest.fixture(scope="module")
def api(server: ServingService):  # -> openai.OpenAI
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def the_call(call) -> tuple[str, dict]:
    assert call.type == "function" and call.id.startswith("call_")
    return call.function.name, json.loads(call.function.arguments)


def test_auto_tool_choice_answers_with_the_call(api, names: dict[str, str]) -> None:
    done = api.chat.completions.create(model=names["tools"], messages=ASK, tools=TOOLS)
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert [the_call(c) for c in choice.message.tool_calls] == [(TOOL, ARGUMENTS)]
    assert done.usage is not None and done.usage.completion_tokens > 0


def test_a_streamed_answer_carries_the_call(api, names: dict[str, str]) -> None:
    calls: dict[int, dict[str, str]] = {}
    finish, content = None, ""
    for chunk in api.chat.completions.create(
        model=names["tools"], messages=ASK, tools=TOOLS, stream=True
    ):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for piece in delta.tool_calls or []:
            entry = calls.setdefault(piece.index, {"name": "", "arguments": ""})
            entry["id"] = piece.id or entry.get("id", "")
            entry["name"] += piece.function.name or ""
            entry["arguments"] += piece.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert content == ""  # the call's text is never streamed as content
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [(TOOL, ARGUMENTS)]
    assert calls[0]["id"].startswith("call_")


def test_a_named_function_is_called(api, names: dict[str, str]) -> None:
    for stream in (False, True):
        choice = {"type": "function", "function": {"name": TOOL}}
        if not stream:
            done = api.chat.completions.create(
                model=names["tools"], messages=ASK, tools=TOOLS, tool_choice=choice
            )
            assert [the_call(c) for c in done.choices[0].message.tool_calls] == [(TOOL, ARGUMENTS)]
            # the call was forced: the model wrote only the arguments and the end
            assert done.usage.completion_tokens < 6
            continue
        chunks = list(
            api.chat.completions.create(
                model=names["tools"], messages=ASK, tools=TOOLS, tool_choice=choice, stream=True
            )
        )
        pieces = [p for c in chunks if c.choices for p in c.choices[0].delta.tool_calls or []]
        assert [(p.function.name, json.loads(p.function.arguments)) for p in pieces] == [
            (TOOL, ARGUMENTS)
        ]


def test_tool_choice_none_answers_in_text(api, names: dict[str, str]) -> None:
    done = api.chat.completions.create(
        model=names["tools"], messages=ASK, tools=TOOLS, tool_choice="none"
    )
    choice = done.choices[0]
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert "<tool_call>" in choice.message.content  # what it wrote, not read as a call


def test_a_tool_result_goes_back_to_the_model(api, names: dict[str, str]) -> None:
    first = api.chat.completions.create(model=names["tools"], messages=ASK, tools=TOOLS)
    call = first.choices[0].message.tool_calls[0]
    conversation = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 18}'},
    ]
    again = api.chat.completions.create(model=names["tools"], messages=conversation, tools=TOOLS)
    assert again.choices[0].finish_reason == "tool_calls"  # the script calls again
    assert again.usage.prompt_tokens > first.usage.prompt_tokens  # the result was rendered


def test_bad_tool_requests_are_400(api, names: dict[str, str]) -> None:
    from openai import BadRequestError

    with pytest.raises(BadRequestError) as unknown:
        api.chat.completions.create(
            model=names["tools"],
            messages=ASK,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "no_such_tool"}},
        )
    assert unknown.value.body["param"] == "tool_choice"
    with pytest.raises(BadRequestError) as plain:  # a ChatML model: its template has no tools
        api.chat.completions.create(model=names["plain"], messages=ASK, tools=TOOLS)
    assert plain.value.body["code"] == "tools_unsupported"
    assert "no tool support" in plain.value.body["message"]
    for stream in (False, True):  # the same request without tools is served
        done = api.chat.completions.create(
            model=names["plain"], messages=ASK, max_tokens=2, stream=stream
        )
        assert done is not None

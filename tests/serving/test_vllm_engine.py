"""The vLLM engine against a loopback stand-in that speaks vLLM's API (vllm_standin.py).

Each test names its registered model uniquely; every process the engine starts (the stand-in
and its grandchild) carries that name on its command line, so "nothing left running" is
checked by scanning /proc for it after the engine is done.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from pydantic import ValidationError

from serving.engine import GenerationRequest, VersionClosed
from serving.vllm import (
    UpstreamError,
    UpstreamInputError,
    VllmConfig,
    VllmEngine,
    VllmStartError,
)
from tests.serving.vllm_standin import STANDIN, processes_named, wait_gone, write_checkpoint
from uptake.errors import InputError

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("vllm") / "tiny")


@pytest.fixture
def name() -> str:
    return f"legal-{uuid.uuid4().hex[:8]}"


def engine_for(tmp_path: Path, *flags: str, **config) -> VllmEngine:
    config.setdefault("start_timeout_s", 30)
    config.setdefault("stop_grace_s", 5)
    config.setdefault("health_interval_s", 0.1)
    cfg = VllmConfig(command=[sys.executable, str(STANDIN), *flags], **config)
    return VllmEngine(cfg, tmp_path / "state")


def ask(text: str, **params) -> GenerationRequest:
    return GenerationRequest.model_validate(
        {"messages": [{"role": "user", "content": text}], **params}
    )


def standin_state(version) -> dict:
    return httpx.get(f"{version.server.base_url}/standin/state", timeout=5).json()


def test_load_waits_for_health_warms_and_answers(tmp_path: Path, model_dir: Path, name: str):
    async def scenario() -> None:
        engine = engine_for(tmp_path, "--startup-delay", "1", "--spawn-child")
        try:
            started = time.monotonic()
            v1 = await engine.load(name, "1", model_dir)
            assert time.monotonic() - started >= 1  # not before the server was healthy
            state = await asyncio.to_thread(standin_state, v1)
            assert state["requests"] == 1  # the warm-up request, before any caller's
            assert state["served_model_name"] == f"{name}/1"
            assert state["model"] == str(model_dir)
            assert "--load-format" in state["other_args"]
            assert state["other_args"][state["other_args"].index("--load-format") + 1] == (
                "safetensors"
            )
            assert "--trust-remote-code" not in state["other_args"]
            assert "--chat-template" not in state["other_args"]  # the model has its own

            answer = await v1.generate(ask("is the deadline past"))
            assert answer.text == f"{name}/1 answered: is the deadline past"
            assert answer.finish_reason == "stop"
            assert (answer.prompt_tokens, answer.completion_tokens) == (4, 6)

            deltas = [d async for d in v1.stream(ask("is the deadline past"))]
            assert "".join(d.text for d in deltas) == answer.text
            assert len(deltas) > 2  # relayed chunk by chunk, not buffered
            assert all(d.finish_reason is None for d in deltas[:-1])
            last = deltas[-1]
            assert (last.finish_reason, last.prompt_tokens, last.completion_tokens) == (
                "stop",
                4,
                6,
            )
            short = await v1.generate(ask("one two three four", max_tokens=3))
            assert short.finish_reason == "length"
            assert len(processes_named(name)) == 2  # the server and its engine-core child
        finally:
            await engine.aclose()

    run(scenario())
    assert wait_gone(name) == []


def test_failing_start_raises_with_reason_and_leaves_nothing(
    tmp_path: Path, model_dir: Path, name: str
):
    engine = engine_for(tmp_path, "--fail-start", "--spawn-child")

    async def scenario() -> None:
        try:
            await engine.load(name, "2", model_dir)
        finally:
            await engine.aclose()

    with pytest.raises(VllmStartError) as failed:
        run(scenario())
    message = str(failed.value)
    assert "\n" not in message
    assert f"{name}/2 exited during start-up" in message
    assert "exit code 1" in message
    assert "not enough GPU memory" in message  # the server's last log line
    assert wait_gone(name) == []  # the grandchild went with the group


def test_hung_start_times_out_and_the_group_is_killed(tmp_path: Path, model_dir: Path, name: str):
    engine = engine_for(
        tmp_path,
        "--hang",
        "--spawn-child",
        "--ignore-sigterm",
        start_timeout_s=1.5,
        stop_grace_s=1,
    )

    async def scenario() -> None:
        try:
            await engine.load(name, "3", model_dir)
        finally:
            await engine.aclose()

    started = time.monotonic()
    with pytest.raises(VllmStartError, match=r"not healthy after 1\.5s"):
        run(scenario())
    assert time.monotonic() - started < 15
    assert wait_gone(name) == []  # SIGTERM ignored, so SIGKILL did it


def test_blue_green_close_drains_in_flight_requests(tmp_path: Path, model_dir: Path, name: str):
    async def scenario() -> None:
        engine = engine_for(tmp_path, "--latency", "1.5", "--spawn-child", warm_timeout_s=20)
        try:
            old, new = await asyncio.gather(
                engine.load(name, "1", model_dir), engine.load(name, "2", model_dir)
            )
            slow = asyncio.create_task(old.generate(ask("slow one")))

            async def slow_stream() -> str:
                return "".join([d.text async for d in old.stream(ask("slow stream"))])

            streaming = asyncio.create_task(slow_stream())
            while old.in_flight < 2:
                await asyncio.sleep(0.01)
            # the swap manager's part: pointer now at `new`, then close the old one
            closing = asyncio.create_task(old.close())
            await asyncio.sleep(0.2)
            assert not closing.done()  # draining: two requests still run on the old server
            with pytest.raises(VersionClosed):
                await old.generate(ask("too late"))
            assert (await new.generate(ask("hi"))).text == f"{name}/2 answered: hi"
            assert (await slow).text == f"{name}/1 answered: slow one"
            assert await streaming == f"{name}/1 answered: slow stream"
            await closing
            assert not old.server.running
            assert wait_gone(f"{name}/1") == []
            assert len(processes_named(f"{name}/2")) == 2  # the new one untouched
            assert (await new.generate(ask("still here"))).text.startswith(f"{name}/2")
        finally:
            await engine.aclose()

    run(scenario())
    assert wait_gone(name) == []


def test_drain_is_bounded(tmp_path: Path, model_dir: Path, name: str):
    async def scenario() -> None:
        engine = engine_for(tmp_path, drain_timeout_s=0.5)
        try:
            version = await engine.load(name, "1", model_dir)
            hold = asyncio.Event()

            async def stuck() -> None:  # a client that never finishes reading its stream
                async for _ in version.stream(ask("never read to the end")):
                    await hold.wait()

            reader = asyncio.create_task(stuck())
            while version.in_flight < 1:
                await asyncio.sleep(0.01)
            started = time.monotonic()
            await version.close()
            assert time.monotonic() - started < 5
            assert not version.server.running
            reader.cancel()
        finally:
            await engine.aclose()

    run(scenario())
    assert wait_gone(name) == []


def test_upstream_errors_are_one_line(tmp_path: Path, model_dir: Path, name: str):
    async def scenario() -> None:
        engine = engine_for(tmp_path)
        try:
            version = await engine.load(name, "1", model_dir)
            with pytest.raises(UpstreamInputError, match="maximum context length"):
                await version.generate(ask("too long"))
            with pytest.raises(UpstreamInputError, match="maximum context length"):
                _ = [d async for d in version.stream(ask("too long"))]
            os.killpg(version.server.pgid, signal.SIGKILL)  # the server dies under us
            await asyncio.to_thread(version.server.process._proc.wait, 5)
            with pytest.raises(UpstreamError, match=r"is gone \(killed by SIGKILL"):
                await version.generate(ask("anyone?"))
            with pytest.raises(UpstreamError, match="is gone"):
                _ = [d async for d in version.stream(ask("anyone?"))]
        finally:
            await engine.aclose()

    run(scenario())
    assert wait_gone(name) == []


def test_cancelled_load_leaves_nothing(tmp_path: Path, model_dir: Path, name: str):
    async def scenario() -> None:
        engine = engine_for(tmp_path, "--startup-delay", "30", "--spawn-child")
        try:
            load = asyncio.create_task(engine.load(name, "1", model_dir))
            deadline = time.monotonic() + 10
            while len(processes_named(name)) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert len(processes_named(name)) == 2
            load.cancel()
            with pytest.raises(asyncio.CancelledError):
                await load
        finally:
            await engine.aclose()

    run(scenario())
    assert wait_gone(name) == []


def test_remote_code_is_refused_unless_allow_listed(tmp_path: Path, model_dir: Path, name: str):
    remote = tmp_path / "remote"
    remote.mkdir()
    for item in model_dir.iterdir():
        (remote / item.name).write_bytes(item.read_bytes())
    config = json.loads((remote / "config.json").read_text())
    config.update(model_type="tinyfoo", auto_map={"AutoModelForCausalLM": "modeling_x.Foo"})
    (remote / "config.json").write_text(json.dumps(config))
    (remote / "modeling_x.py").write_text("raise SystemExit('remote code ran')\n")

    async def load(allowlist: list[str]):
        cfg = VllmConfig(command=[sys.executable, str(STANDIN)], health_interval_s=0.1)
        engine = VllmEngine(cfg, tmp_path / "state", trust_remote_code_allowlist=allowlist)
        try:
            version = await engine.load(name, "1", remote)
            return await asyncio.to_thread(standin_state, version)
        finally:
            await engine.aclose()

    with pytest.raises(InputError, match="not in trust_remote_code_allowlist"):
        run(load([]))
    assert processes_named(name) == []  # refused before anything started
    state = run(load([str(remote.resolve())]))
    assert "--trust-remote-code" in state["other_args"]
    assert wait_gone(name) == []


def test_model_without_template_gets_chatml_and_its_stop_texts(tmp_path: Path, name: str):
    bare = write_checkpoint(tmp_path / "bare", template=False)

    async def scenario() -> dict:
        engine = engine_for(tmp_path)
        try:
            version = await engine.load(name, "1", bare)
            body = version._request_body(ask("hi"), stream=False)
            return {"state": await asyncio.to_thread(standin_state, version), "body": body}
        finally:
            await engine.aclose()

    seen = run(scenario())
    args = seen["state"]["other_args"]
    template = Path(args[args.index("--chat-template") + 1])
    assert "<|im_start|>" in template.read_text()
    assert "<|im_end|>" in seen["body"]["stop"]


def test_config_refuses_flags_uptake_owns():
    for flag in ("--trust-remote-code", "--port=9", "--model", "--load-format", "--api-key"):
        with pytest.raises(ValidationError, match="set by uptake"):
            VllmConfig(extra_args=[flag])
    assert VllmConfig().argv()[1:] == ["-m", "vllm.entrypoints.openai.api_server"]


HOLDER = """
import asyncio, sys
from pathlib import Path
from serving.vllm import VllmConfig, VllmEngine

async def main():
    cfg = VllmConfig(command=[sys.executable, sys.argv[1], "--spawn-child"], health_interval_s=0.1)
    engine = VllmEngine(cfg, Path(sys.argv[2]))
    await engine.load(sys.argv[3], "1", Path(sys.argv[4]))
    print("READY", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def test_servers_do_not_outlive_a_killed_engine(tmp_path: Path, model_dir: Path, name: str):
    """kill -9 of the process that runs the engine: its watchdog stops the vLLM servers."""
    import subprocess

    argv = [sys.executable, "-c", HOLDER, str(STANDIN), str(tmp_path), name, str(model_dir)]
    holder = subprocess.Popen(
        argv, stdout=subprocess.PIPE, cwd=Path(__file__).parents[2], text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "READY"
        servers = set(processes_named(name)) - {holder.pid}
        assert len(servers) == 2  # the server and its child, in a session of their own
        holder.kill()
        holder.wait(5)
        assert wait_gone(name, timeout_s=15) == []
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(5)


HERMES = (
    "{% if tools %}{{ tools | tojson }} answer with <tool_call>{...}</tool_call>{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}"
)
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}


def test_tools_pass_through_to_a_server_with_the_templates_parser(tmp_path: Path, name: str):
    hermes = write_checkpoint(tmp_path / "hermes", template=HERMES)

    async def scenario() -> None:
        engine = engine_for(tmp_path)
        try:
            version = await engine.load(name, "1", hermes)
            state = await asyncio.to_thread(standin_state, version)
            args = state["other_args"]
            assert "--enable-auto-tool-choice" in args
            assert args[args.index("--tool-call-parser") + 1] == "hermes"
            request = ask("weather in Paris", tools=(WEATHER_TOOL,))
            answer = await version.generate(request)
            assert answer.finish_reason == "tool_calls" and answer.text == ""
            [call] = answer.tool_calls
            assert (call.name, json.loads(call.arguments)) == (
                "get_weather",
                {"echo": "weather in Paris"},
            )
            assert call.id.startswith("chatcmpl-tool-")  # vLLM's id, kept
            deltas = [d async for d in version.stream(request)]
            last = deltas[-1]
            assert last.finish_reason == "tool_calls"
            assert [(c.name, c.arguments) for c in last.tool_calls] == [
                (call.name, call.arguments)
            ]  # gathered from the pieces vLLM streamed
            named = ask("x", tools=(WEATHER_TOOL,), tool_choice="function", forced_tool="f")
            body = version._request_body(named, stream=False)
            assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
            assert body["tools"] == [WEATHER_TOOL]
        finally:
            await engine.aclose()

    run(scenario())


def test_tools_for_a_model_without_tool_support_are_refused(
    tmp_path: Path, model_dir: Path, name: str
):
    from serving.engine import ToolsUnsupported

    async def scenario() -> None:
        engine = engine_for(tmp_path)
        try:
            version = await engine.load(name, "1", model_dir)  # ChatML: no tools
            state = await asyncio.to_thread(standin_state, version)
            assert "--tool-call-parser" not in state["other_args"]
            with pytest.raises(ToolsUnsupported, match="no tool support"):
                await version.generate(ask("hi", tools=(WEATHER_TOOL,)))
            after = await asyncio.to_thread(standin_state, version)
            assert after["requests"] == state["requests"]  # refused before it was sent
        finally:
            await engine.aclose()

    run(scenario())


def test_the_tool_parser_is_configured_not_passed_as_a_flag(tmp_path: Path, model_dir: Path):
    for flag in ("--tool-call-parser", "--enable-auto-tool-choice"):
        with pytest.raises(ValidationError, match=r"serving\.vllm\.tool_call_parser"):
            VllmConfig(extra_args=[flag])
    engine = VllmEngine(VllmConfig(tool_call_parser="llama3_json"), tmp_path / "state")
    args, _ = engine._args(model_dir)
    assert args[args.index("--tool-call-parser") + 1] == "llama3_json"


def test_a_version_takes_at_most_max_queue_requests_at_once(
    tmp_path: Path, model_dir: Path, name: str
):
    from serving.engine import QueueFull

    async def scenario() -> None:
        engine = engine_for(tmp_path, "--latency", "1.5")
        engine.max_queue = 2
        try:
            version = await engine.load(name, "1", model_dir)
            slow = [asyncio.create_task(version.generate(ask(f"q{i}"))) for i in range(2)]
            await asyncio.sleep(0.3)
            assert version.queue_depth == 2
            with pytest.raises(QueueFull, match=r"serving\.max_queue"):
                await version.generate(ask("one too many"))
            assert all(a.finish_reason == "stop" for a in await asyncio.gather(*slow))
            assert version.queue_depth == 0
            assert (await version.generate(ask("room again"))).text.endswith("room again")
        finally:
            await engine.aclose()

    run(scenario())

"""A loopback stand-in for vLLM's OpenAI-compatible server, for the vLLM engine's tests.

It takes vLLM's command line (``--model``, ``--served-model-name``, ``--host``, ``--port``;
other vLLM flags are accepted and logged) and speaks the subset the engine uses, in vLLM's
shapes: ``GET /health`` (empty 200), ``GET /v1/models``, ``POST /v1/chat/completions``
(non-streaming, and SSE chunks with a final ``choices: []`` usage chunk when
``stream_options.include_usage`` is set, then ``data: [DONE]``). Every answer says which
served name produced it, so a test can see which version answered.

Tool calls as vLLM makes them: a request with ``tools`` is refused (400) unless the server was
started with ``--enable-auto-tool-choice``; then the answer is a call of the named function
(``tool_choice``) or the first tool, with ``{"echo": <last message>}`` as arguments, streamed as
vLLM streams calls (id and name first, then the arguments in pieces).

Behaviour flags (placed before the engine's own arguments in the engine's ``command``):
``--startup-delay S`` before serving, ``--fail-start`` (log an error, exit 1 before healthy),
``--hang`` (never healthy), ``--latency S`` per request, ``--spawn-child`` (a grandchild in
the same process group, as vLLM's engine-core processes are), ``--ignore-sigterm``.

Run: ``python tests/serving/vllm_standin.py [flags] --model DIR --served-model-name NAME
--port PORT``.
"""

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

SHUTDOWN_NOTE = "stand-in: shutting down"


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--startup-delay", type=float, default=0.0)
    parser.add_argument("--fail-start", action="store_true")
    parser.add_argument("--hang", action="store_true")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--spawn-child", action="store_true")
    parser.add_argument("--ignore-sigterm", action="store_true")
    return parser.parse_known_args(argv)


def build_app(args: argparse.Namespace, others: list[str]):  # -> FastAPI
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse

    app = FastAPI()
    name = args.served_model_name
    state = {"requests": 0, "in_flight": 0}

    def error(status: int, message: str) -> JSONResponse:
        body = {"error": {"message": message, "type": "BadRequestError", "code": status}}
        return JSONResponse(body, status_code=status)

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    @app.get("/v1/models")
    async def models() -> dict:
        card = {"id": name, "object": "model", "owned_by": "vllm", "root": args.model}
        return {"object": "list", "data": [card]}

    @app.get("/standin/state")
    async def standin_state() -> dict:
        return {**state, "served_model_name": name, "model": args.model, "other_args": others}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        if body.get("model") != name:
            return error(404, f"The model `{body.get('model')}` does not exist.")
        messages = body.get("messages") or []
        if not messages:
            return error(400, "messages must not be empty")
        prompt = str(messages[-1].get("content", ""))
        if prompt == "too long":
            return error(400, "This model's maximum context length is 8 tokens.")
        if body.get("tools"):
            if "--enable-auto-tool-choice" not in others:
                return error(
                    400,
                    '"auto" tool choice requires --enable-auto-tool-choice and '
                    "--tool-call-parser to be set",
                )
            return tool_call(body, prompt)
        words = [f"{name}", "answered:", *prompt.split()][: int(body.get("max_tokens", 16))]
        finish = "length" if len(words) < len(prompt.split()) + 2 else "stop"
        usage = {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": len(words),
            "total_tokens": len(prompt.split()) + len(words),
        }
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        state["requests"] += 1
        if not body.get("stream"):
            state["in_flight"] += 1
            try:
                await asyncio.sleep(args.latency)
            finally:
                state["in_flight"] -= 1
            message = {"role": "assistant", "content": " ".join(words)}
            return JSONResponse(
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": created,
                    "model": name,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": usage,
                }
            )

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(choices: list, **extra) -> str:
            data = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": name,
                "choices": choices,
                **extra,
            }
            return f"data: {json.dumps(data)}\n\n"

        async def events():
            state["in_flight"] += 1
            try:
                yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}}])
                for i, word in enumerate(words):
                    await asyncio.sleep(args.latency / max(len(words), 1))
                    text = word if i == 0 else f" {word}"
                    yield chunk([{"index": 0, "delta": {"content": text}, "finish_reason": None}])
                yield chunk([{"index": 0, "delta": {}, "finish_reason": finish}])
                if include_usage:
                    yield chunk([], usage=usage)
                yield "data: [DONE]\n\n"
            finally:
                state["in_flight"] -= 1

        return StreamingResponse(events(), media_type="text/event-stream")

    def tool_call(body: dict, prompt: str) -> Response:
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            fn = choice["function"]["name"]
        else:
            fn = body["tools"][0]["function"]["name"]
        arguments = json.dumps({"echo": prompt})
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        call_id = f"chatcmpl-tool-{uuid.uuid4().hex[:8]}"
        usage = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
        state["requests"] += 1
        if not body.get("stream"):
            call = {
                "id": call_id,
                "type": "function",
                "function": {"name": fn, "arguments": arguments},
            }
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            return JSONResponse(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": name,
                    "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                    "usage": usage,
                }
            )

        def chunk(choices: list, **extra) -> str:
            data = {"id": cid, "object": "chat.completion.chunk", "created": created}
            return f"data: {json.dumps({**data, 'model': name, 'choices': choices, **extra})}\n\n"

        def piece(**call) -> str:
            return chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0, **call}]}}])

        async def events():
            yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}}])
            head = {"name": fn, "arguments": ""}
            yield piece(id=call_id, type="function", function=head)
            half = len(arguments) // 2
            for part in (arguments[:half], arguments[half:]):
                yield piece(function={"arguments": part})
            yield chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])
            yield chunk([], usage=usage)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def main(argv: list[str]) -> int:
    args, others = parse(argv)
    print(f"stand-in for {args.served_model_name}: model={args.model} other={others}", flush=True)
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.spawn_child:  # stays in our process group, like vLLM's engine core
        # its command line names the served model, so a test can find it by that name
        sleeper = "import time; time.sleep(600)"
        subprocess.Popen([sys.executable, "-c", sleeper, "stand-in-child", args.served_model_name])
    time.sleep(args.startup_delay)
    if args.fail_start:
        print("ValueError: stand-in failed to start: not enough GPU memory", flush=True)
        return 1
    if args.hang:
        while True:
            time.sleep(3600)

    import uvicorn

    uvicorn.run(build_app(args, others), host=args.host, port=args.port, log_level="warning")
    print(SHUTDOWN_NOTE, flush=True)
    return 0


# --- helpers for the tests that start it ------------------------------------------------------

STANDIN = Path(__file__).resolve()


def write_checkpoint(path: Path, *, template: bool | str = True) -> Path:
    """A Llama-shaped directory the engine's checks accept (config, safetensors weights,
    tokenizer config). The stand-in never reads the weights, so they are one small tensor and
    no torch import is paid for them; the chat template is the one uptake ships, ``template``
    itself when it is a text, none when False."""
    import numpy as np
    from safetensors.numpy import save_file

    from uptake.models import chatml

    path.mkdir(parents=True)
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 8}
    (path / "config.json").write_text(json.dumps(config))
    save_file({"lm_head.weight": np.zeros((4, 8), dtype=np.float32)}, path / "model.safetensors")
    text = template if isinstance(template, str) else chatml() if template else None
    tokenizer = {"eos_token": "<|im_end|>", **({"chat_template": text} if text else {})}
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    return path


def processes_named(marker: str) -> list[int]:
    """Live, non-zombie processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def wait_gone(marker: str, timeout_s: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (left := processes_named(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

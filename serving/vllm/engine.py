"""The production engine: every loaded version is its own vLLM server, behind this proxy.

vLLM's in-place model changes are fragile (runtime LoRA loading and sleep/wake with requests
in flight have open crash reports), so a swap never touches a running server: ``load``
starts a second server for the new version and returns once it is healthy and has answered
one warm-up request; the swap manager switches its pointer; ``close`` on the old version
waits for its in-flight requests (bounded), then stops its process group. The caller keeps
the old version serving whenever ``load`` raises.

The proxy speaks vLLM's OpenAI-compatible API with httpx: non-streaming answers map to
``Generation``, streams are relayed chunk by chunk as ``TextDelta`` with the usage vLLM sends
in its last chunk (``stream_options.include_usage``). A version takes at most ``max_queue``
requests at once (vLLM queues and batches them itself); one more is refused (429).

Tools pass through: a server is started with ``--enable-auto-tool-choice --tool-call-parser
P``, ``P`` being ``serving.vllm.tool_call_parser`` or else the parser for the call format the
model's chat template shows (``uptake.models.tool_calls``: hermes, mistral, llama3_json,
qwen3_coder); a model whose template shows none gets no parser, and tools sent to it are
refused here with a 400, as the transformers engine refuses them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from serving.engine import (
    Generation,
    GenerationRequest,
    QueueFull,
    TextDelta,
    ToolsUnsupported,
    VersionClosed,
)
from serving.vllm.config import VllmConfig
from serving.vllm.protocol import (
    StreamState,
    UpstreamError,
    parse_completion,
    raise_for_status,
    request_body,
)
from serving.vllm.server import VllmServer, VllmStartError
from uptake.errors import InputError
from uptake.models import ModelOrigin, chatml, check_model_dir, decide_remote_code
from uptake.models.chat_templates import CHATML_STOP_TEXTS
from uptake.models.tool_calls import detect_format, template_supports_tools
from uptake.stack.watchdog import Watchdog

log = logging.getLogger(__name__)

WARM_UP = GenerationRequest.model_validate(
    {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 1, "temperature": 0}
)
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


VLLM_TOOL_PARSERS = {"hermes": "hermes", "mistral": "mistral", "llama3_json": "llama3_json"}


def chat_template_text(model_dir: Path) -> str | None:
    """The model's own chat template (all of them, when it has several), or None."""
    texts = []
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        texts.append(jinja.read_text("utf-8", errors="replace"))
    for name in ("chat_template.json", "tokenizer_config.json"):
        try:
            config = json.loads((model_dir / name).read_text("utf-8"))
        except (OSError, ValueError):
            continue
        template = config.get("chat_template") if isinstance(config, dict) else None
        if isinstance(template, str):
            texts.append(template)
        elif isinstance(template, list):
            texts += [t["template"] for t in template if isinstance(t, dict) and "template" in t]
    return "\n".join(texts) if texts else None


def has_chat_template(model_dir: Path) -> bool:
    return chat_template_text(model_dir) is not None


def tool_call_parser(template: str | None) -> str | None:
    """vLLM's ``--tool-call-parser`` for the call format ``template`` shows; None for a
    template without tool support or a format vLLM has no parser for."""
    if template is None or not template_supports_tools(template):
        return None
    fmt = detect_format(template)
    if fmt == "hermes" and "<parameter=" in template:
        return "qwen3_coder"  # <tool_call><function=…><parameter=…>
    return VLLM_TOOL_PARSERS.get(fmt or "")


class VllmVersion:
    """One version's server and the proxy to it. ``close`` drains, then stops the server."""

    def __init__(
        self,
        registered_model: str,
        version: str,
        server: VllmServer,
        client: httpx.AsyncClient,
        config: VllmConfig,
        extra_stop: tuple[str, ...],
        on_closed: Callable[[VllmVersion], None] = lambda _: None,
        *,
        max_queue: int = 256,
        tools_enabled: bool = False,
    ) -> None:
        self.registered_model = registered_model
        self.version = version
        self.server = server
        self._client = client
        self._config = config
        self._extra_stop = extra_stop
        self.max_queue = max_queue
        self.tools_enabled = tools_enabled
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._closed = asyncio.Event()
        self._on_closed = on_closed

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queue_depth(self) -> int:
        return self._in_flight

    @property
    def served_name(self) -> str:
        return self.server.served_name

    def _enter(self, request: GenerationRequest) -> None:
        if self._closing:
            raise VersionClosed(f"{self.served_name} is closed")
        if request.tools and not self.tools_enabled:
            raise ToolsUnsupported(
                f"{self.served_name}: the model's chat template has no tool support (no "
                "tool-call parser for it); send the request without tools"
            )
        if self._in_flight >= self.max_queue:
            raise QueueFull(
                f"{self.served_name} has {self._in_flight} requests in flight, its limit "
                "(serving.max_queue); retry shortly"
            )
        self._in_flight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    def _request_body(self, request: GenerationRequest, *, stream: bool) -> dict[str, Any]:
        return request_body(self.served_name, request, stream=stream, extra_stop=self._extra_stop)

    def _transport_error(self, exc: httpx.HTTPError) -> UpstreamError:
        if not self.server.running:
            return UpstreamError(
                f"vLLM server for {self.served_name} is gone ({self.server.exit_reason()})"
            )
        return UpstreamError(f"vLLM server for {self.served_name}: {type(exc).__name__}: {exc}")

    async def generate(self, request: GenerationRequest) -> Generation:
        self._enter(request)
        try:
            body = self._request_body(request, stream=False)
            try:
                response = await self._client.post(
                    f"{self.server.base_url}/v1/chat/completions", json=body
                )
            except httpx.HTTPError as exc:
                raise self._transport_error(exc) from None
            raise_for_status(response.status_code, response.text)
            try:
                data = response.json()
            except ValueError:
                raise UpstreamError("vLLM answered with a body that is not JSON") from None
            return parse_completion(data)
        finally:
            self._leave()

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[TextDelta, None]:
        self._enter(request)
        try:
            body = self._request_body(request, stream=True)
            state = StreamState()
            url = f"{self.server.base_url}/v1/chat/completions"
            try:
                async with self._client.stream("POST", url, json=body) as response:
                    if response.status_code >= 400:
                        text = (await response.aread()).decode("utf-8", "replace")
                        raise_for_status(response.status_code, text)
                    yield TextDelta()  # admitted: vLLM took the request
                    async for line in response.aiter_lines():
                        if not line.startswith("data:"):
                            continue  # blank separators, comments, other SSE fields
                        delta = state.feed(line[5:].strip())
                        if delta is not None:
                            yield delta
                        if state.done:
                            break
            except httpx.HTTPError as exc:
                raise self._transport_error(exc) from None
            yield state.final()
        finally:
            self._leave()

    async def close(self) -> None:
        """Refuse new requests, wait (up to ``drain_timeout_s``) for running ones, stop."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            try:
                await asyncio.wait_for(self._idle.wait(), self._config.drain_timeout_s)
            except TimeoutError:
                log.warning(
                    "%s: %d request(s) still running after %gs; stopping its server anyway",
                    self.served_name,
                    self._in_flight,
                    self._config.drain_timeout_s,
                )
            await self.server.stop()
        finally:
            self._closed.set()
            self._on_closed(self)


class VllmEngine:
    """Loads versions as supervised vLLM servers; ``aclose`` stops every one still running."""

    name = "vllm"
    libraries: tuple[str, ...] = ()  # vLLM runs in its own processes

    def __init__(
        self,
        config: VllmConfig,
        state_dir: Path,
        *,
        trust_remote_code_allowlist: Iterable[str] = (),
        max_queue: int = 256,
    ) -> None:
        self.config = config
        self.max_queue = max_queue
        self.log_dir = Path(state_dir) / "serving" / "vllm"
        self.allowlist = list(trust_remote_code_allowlist)
        limits = httpx.Limits(max_connections=config.max_connections)
        timeout = httpx.Timeout(config.request_timeout_s, connect=10.0)
        self._client = httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False)
        self._versions: set[VllmVersion] = set()
        self._starting: set[VllmServer] = set()
        self._watchdog: Watchdog | None = None

    def _args(
        self, model_dir: Path, origin: ModelOrigin | None = None
    ) -> tuple[list[str], tuple[str, ...]]:
        """vLLM arguments for ``model_dir`` and stop texts; raises InputError when refused.
        Tool calling is on when the arguments hold ``--tool-call-parser``."""
        check_model_dir(model_dir)
        # matched by the version's source and repo id (its MLflow tags), or by absolute path
        decision = decide_remote_code(model_dir, self.allowlist, origin=origin)
        if decision.refused:
            raise InputError(f"cannot serve {model_dir}: {decision.reason}")
        args = ["--load-format", "safetensors"]
        if decision.trust_remote_code:
            args.append("--trust-remote-code")
        extra_stop: tuple[str, ...] = ()
        if not has_chat_template(model_dir):
            # same fallback as evaluation: ChatML, stopping at its end-of-turn texts
            self.log_dir.mkdir(parents=True, exist_ok=True)
            template = self.log_dir / "chatml.jinja"
            template.write_text(chatml(), "utf-8")
            args += ["--chat-template", str(template)]
            extra_stop = CHATML_STOP_TEXTS
        parser = self.config.tool_call_parser or tool_call_parser(chat_template_text(model_dir))
        if parser:
            args += ["--enable-auto-tool-choice", "--tool-call-parser", parser]
        return args, extra_stop

    def _guard(self, server: VllmServer) -> None:
        if not self.config.guard_children or server.pgid is None:
            return
        if self._watchdog is None:
            self._watchdog = Watchdog()
        self._watchdog.guard(server.pgid)

    def _release(self, server: VllmServer) -> None:
        if self._watchdog is not None and server.pgid is not None:
            self._watchdog.release(server.pgid)

    async def load(
        self,
        registered_model: str,
        version: str,
        model_dir: Path,
        origin: ModelOrigin | None = None,
    ) -> VllmVersion:
        model_dir = Path(model_dir)
        served_name = f"{registered_model}/{version}"
        args, extra_stop = self._args(model_dir, origin)
        server = VllmServer(self.config, served_name, model_dir, self.log_dir, args)
        server.start()
        self._starting.add(server)
        self._guard(server)
        loaded: VllmVersion | None = None
        try:
            await server.wait_ready(self._client)
            loaded = VllmVersion(
                registered_model,
                version,
                server,
                self._client,
                self.config,
                extra_stop,
                on_closed=self._closed,
                max_queue=self.max_queue,
                tools_enabled="--tool-call-parser" in args,
            )
            await self._warm(loaded)
        except BaseException:  # failed, timed out or cancelled: leave nothing running
            await asyncio.shield(self._stop(server))
            raise
        finally:
            self._starting.discard(server)
        self._versions.add(loaded)
        log.info("%s ready on %s (log %s)", served_name, server.base_url, server.log_path)
        return loaded

    async def _warm(self, loaded: VllmVersion) -> None:
        try:
            await asyncio.wait_for(loaded.generate(WARM_UP), self.config.warm_timeout_s)
        except TimeoutError:
            raise VllmStartError(
                f"{loaded.served_name}: warm-up request got no answer in "
                f"{self.config.warm_timeout_s:g}s; log: {loaded.server.log_path}"
            ) from None
        except (UpstreamError, VersionClosed, InputError) as exc:
            raise VllmStartError(f"{loaded.served_name}: warm-up request failed: {exc}") from None

    async def _stop(self, server: VllmServer) -> None:
        await server.stop()
        self._release(server)

    def _closed(self, loaded: VllmVersion) -> None:
        self._versions.discard(loaded)
        self._release(loaded.server)

    async def aclose(self) -> None:
        """Close every version (each drains, bounded), stop servers still starting."""
        await asyncio.gather(
            *(v.close() for v in list(self._versions)),
            *(self._stop(s) for s in list(self._starting)),
            return_exceptions=True,
        )
        self._versions.clear()
        await self._client.aclose()
        if self._watchdog is not None:
            await asyncio.to_thread(self._watchdog.close)
            self._watchdog = None

"""``uptake serve`` as one object: the API on uvicorn, the swap manager on its event loop, and
a bystander consumer of ``uptake.decisions`` that kicks the manager on ``champion.changed``.

The API is bounded against careless and hostile clients (docs/serving.md "Limits"): a
connection cap fitted to the open-files limit, deadlines for a request's headers and body,
idle keep-alive closed, resource errors logged once a minute. A non-loopback address without
an API key is refused at start unless ``serving.allow_unauthenticated`` says so.

The consumer's group is this replica's own (prefix, host, port and a uuid): every replica sees
every change, and none takes partitions from another. It only reads; the promoter owns the
topic, so an undecodable message is skipped here (the promoter dead-letters it). It commits
at once: the event only says "look at the alias now", and the reconcile catches anything
missed while the replica was down.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import uvicorn
from kafka.consumer.fetcher import ConsumerRecord

from serving.api import build_app
from serving.api.state import RequestLimits
from serving.champions import ChampionSource
from serving.engines import make_engine
from serving.metrics import ServingMetrics
from serving.swap import SwapManager
from uptake.bus import EventConsumer, EventProducer
from uptake.bus.topics import ensure_topics, topic_for
from uptake.errors import ConfigError, InputError
from uptake.events import ChampionChanged, Event
from uptake.http_guard import (
    ConnectionLimits,
    fit_to_open_files,
    quiet_resource_errors,
    server_config,
)
from uptake.http_server import bind_socket
from uptake.service_runtime import Supervisor, stop_consumer
from uptake.serving_config import ServingSettings, is_loopback
from uptake.settings import Settings

log = logging.getLogger(__name__)


def served_models(settings: Settings, model: str | None = None) -> list[str]:
    """What to serve: ``model``, else ``serving.models``, else every track's registered model,
    else ``mlflow.registered_model``."""
    if model:
        return [model]
    if settings.serving.models:
        return list(dict.fromkeys(settings.serving.models))
    if settings.tracks:
        return [t.registered_model for t in settings.tracks]
    return [settings.mlflow.registered_model]


def refuse_open_exposure(host: str, api_key: str | None, *, allow: bool) -> None:
    """A non-loopback address without an API key is an open model server for anyone who can
    reach the port: refused unless the settings say so explicitly."""
    if api_key is None and not allow and not is_loopback(host):
        raise ConfigError(
            f"serving would listen on {host} with no API key: set serving.api_key_env (and "
            "that variable), bind 127.0.0.1, or set serving.allow_unauthenticated: true"
        )


def health_file(settings: Settings) -> Path:
    return settings.state_dir / "serving.json"


class ServingService:
    """Start with ``start()``, stop with ``stop()``; ``url`` once started."""

    def __init__(
        self,
        settings: Settings,
        *,
        models: list[str] | None = None,
        engine: str | None = None,
        host: str | None = None,
        port: int | None = None,
    ) -> None:
        cfg = settings.serving
        self.settings = settings
        self.models = models or served_models(settings)
        api_key = cfg.api_key()  # a configured but unset key fails here, not on first request
        self.host = host or cfg.host
        refuse_open_exposure(self.host, api_key, allow=cfg.allow_unauthenticated)
        self.metrics = ServingMetrics()
        self.producer = EventProducer(settings, producer_name="serving")
        self.source = ChampionSource(
            settings.tracking_uri,
            settings.state_dir / "serving",
            {s.name: s.kind for s in settings.sources},
        )
        self.manager = SwapManager(
            self.models,
            make_engine(settings, engine),
            self.source,
            self.metrics,
            alert=self.producer.publish,
            retry_failed_s=cfg.retry_failed_s,
            retry_failed_max_s=cfg.retry_failed_max_s,
            download_timeout_s=cfg.download_timeout_s,
            load_timeout_s=cfg.load_timeout_s,
            on_served=self.source.mark_served,
            keep_versions=cfg.keep_versions,
        )
        wanted = cfg.port if port is None else port
        self._sock = bind_socket(
            self.host, wanted, name="serving", default_port=ServingSettings.DEFAULT_PORT
        )
        self.port: int = self._sock.getsockname()[1]
        shown = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
        self.url = cfg.public_url or f"http://{shown}:{self.port}"
        limits = RequestLimits(
            max_request_bytes=cfg.max_request_bytes,
            body_timeout_s=cfg.body_timeout_s,
            default_max_tokens=cfg.default_max_tokens,
            max_tokens_limit=cfg.max_tokens_limit,
        )
        self.app = app = build_app(self.manager, self.metrics, limits, api_key=api_key)
        app.router.lifespan_context = self._lifespan
        self.connection_limits = ConnectionLimits(
            max_connections=fit_to_open_files(cfg.max_connections),
            header_timeout_s=cfg.header_timeout_s,
            keep_alive_s=cfg.keep_alive_s,
        )
        self._server = uvicorn.Server(
            server_config(
                app,
                self.connection_limits,
                log_level="warning",
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=10,
            )
        )
        self.group_id = (
            f"{cfg.consumer_group_prefix}-{socket.gethostname()}-{self.port}-{uuid.uuid4().hex[:8]}"
        )
        self.consumer: EventConsumer | None = None
        self._consumer_thread: threading.Thread | None = None
        self._http_thread: threading.Thread | None = None
        self.supervisor = Supervisor("serving")

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: object) -> AsyncIterator[None]:
        self.manager.start(self.settings.serving.reconcile_interval_s)
        try:
            yield
        finally:
            await self.manager.aclose()

    def handle(self, event: Event, record: ConsumerRecord | None = None) -> None:
        if isinstance(event, ChampionChanged) and event.registered_model in self.models:
            log.info(
                "champion.changed: %s v%s (%s)", event.registered_model, event.version, event.reason
            )
            self.manager.kick(event.registered_model)

    def start(self, timeout_s: float = 30.0) -> ServingService:
        quiet_resource_errors()
        ensure_topics(self.settings)
        self.consumer = EventConsumer(
            self.settings,
            self.group_id,
            [topic_for(self.settings, ChampionChanged)],
            self.handle,
            accept=(ChampionChanged,),
            producer=self.producer,
            dead_letter_undecodable=False,
        )
        self._http_thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name="serving-http",
            daemon=True,
        )
        self._http_thread.start()
        self._wait_started(timeout_s)
        self.supervisor.watch(
            "http", lambda: self._http_thread is not None and self._http_thread.is_alive()
        )
        self._consumer_thread = self.supervisor.start("decisions-consumer", self.consumer.run)
        self._write_health_file()
        log.info(
            "serving %s on %s (%s engine)",
            ", ".join(self.models),
            self.url,
            self.manager.engine.name,
        )
        return self

    def _wait_started(self, timeout_s: float) -> None:
        end = time.monotonic() + timeout_s
        while not self._server.started:
            if self._http_thread is None or not self._http_thread.is_alive():
                raise InputError("the serving HTTP server stopped during start-up (see its log)")
            if time.monotonic() > end:
                raise InputError(f"the serving HTTP server did not start within {timeout_s:g}s")
            time.sleep(0.02)

    def wait(self, stop: threading.Event) -> None:
        self.supervisor.wait(stop)

    def stop(self) -> None:
        self.supervisor.stop()
        stop_consumer(self.consumer, self._consumer_thread)
        self.consumer = None
        self._server.should_exit = True
        if self._http_thread is not None and self._http_thread.is_alive():
            self._http_thread.join(timeout=60)
        self._sock.close()
        self.producer.close()
        self._remove_health_file()

    def _write_health_file(self) -> None:
        path = health_file(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "url": self.url, "models": self.models}))
        tmp.replace(path)

    def _remove_health_file(self) -> None:
        path = health_file(self.settings)
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()

    def __enter__(self) -> ServingService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""What every long-running service process does: stop on a signal, and exit when one of its
background threads dies (its endpoints come from ``uptake.stack.local.resolved_settings``).

A service (watcher, promoter, alerter, …) does its work in background threads — a bus
consumer, an HTTP server, a reconcile loop — while the main thread waits. A thread that dies
without being asked to stop leaves a process that looks alive but does nothing (or, before
this module, exited 0). :class:`Supervisor` starts and watches those threads; ``wait`` raises
:class:`ServiceFailed` naming the thread and its error on one line, which the CLI prints as
``error: …`` with exit code 1, so a supervisor (compose, systemd, ``uptake up``) restarts the
service and an operator sees why in its log.
"""

from __future__ import annotations

import gc
import importlib
import logging
import signal
import threading
from collections.abc import Callable
from typing import Protocol

from uptake.errors import UptakeError, one_line

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ServiceFailed(UptakeError):
    """A part of the service stopped on its own; the process must exit non-zero."""

    exit_code = 1


def on_stop_signals(action: Callable[[], object]) -> bool:
    """Call ``action`` on SIGTERM and SIGINT, installed explicitly for both (a shell that
    starts a process in the background leaves SIGINT ignored). Only the main thread can
    install handlers: elsewhere nothing is installed and False is returned."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda *_: action())
    return True


def stop_event() -> threading.Event:
    """An event that SIGTERM or SIGINT sets: the main loop of a service waits on it."""
    stop = threading.Event()
    on_stop_signals(stop.set)
    return stop


class EventConsumerLike(Protocol):
    """What ``stop_consumer`` needs of a consumer (``uptake.bus.EventConsumer``)."""

    def stop(self) -> None: ...

    def close(self) -> None: ...


class Supervisor:
    """Runs and watches the background threads of one service.

    ``start`` runs a target in a daemon thread and records how it ended; ``watch`` adds a
    part that runs its own thread (e.g. an HTTP server) through an ``alive`` check. Once
    ``stop`` was called, threads ending is expected and no longer a failure.
    """

    def __init__(self, service: str) -> None:
        self.service = service
        self._failure: str | None = None
        self._stopping = threading.Event()
        self._changed = threading.Event()
        self._watched: list[tuple[str, Callable[[], bool]]] = []
        self._lock = threading.Lock()

    @property
    def failure(self) -> str | None:
        """Why the service cannot go on (the first part that failed), or None."""
        with self._lock:
            if self._failure is None and not self._stopping.is_set():
                for name, alive in self._watched:
                    if not alive():
                        self._failure = f"{self.service}: {name} stopped unexpectedly"
                        break
            return self._failure

    def start(self, name: str, target: Callable[[], object]) -> threading.Thread:
        """Run ``target`` in a daemon thread named ``name``; its end (unless stopping) fails."""

        def run() -> None:
            try:
                target()
            except BaseException as exc:  # whatever ends the thread ends the service
                self._fail(name, f"{type(exc).__name__}: {exc}", exc)
            else:
                self._fail(name, "returned", None)
            finally:
                self._changed.set()

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        return thread

    def watch(self, name: str, alive: Callable[[], bool]) -> None:
        """Treat ``alive()`` turning False (unless stopping) as a failure of the service."""
        with self._lock:
            self._watched.append((name, alive))

    def _fail(self, name: str, how: str, exc: BaseException | None) -> None:
        if self._stopping.is_set():
            return
        reason = (
            f"{self.service}: {name} stopped unexpectedly"
            if exc is None
            else f"{self.service}: {name} died: {one_line(how)}"
        )
        with self._lock:
            if self._failure is None:
                self._failure = reason
        log.error("%s", reason, exc_info=exc)  # the traceback for the log; the reason for all

    def stop(self) -> None:
        """From now on, threads ending are part of the shutdown."""
        self._stopping.set()
        self._changed.set()

    def wait(self, stop: threading.Event, poll_s: float = 0.5) -> None:
        """Block until ``stop`` is set (a signal); raise ServiceFailed if a part fails first."""
        while not stop.is_set():
            if (reason := self.failure) is not None:
                raise ServiceFailed(reason)
            self._changed.wait(poll_s)
            self._changed.clear()
        if (reason := self.failure) is not None:
            raise ServiceFailed(reason)


def stop_consumer(
    consumer: EventConsumerLike | None, thread: threading.Thread | None, join_s: float = 30.0
) -> None:
    """Stop a service's consumer loop, wait for its thread, then close it: closing first would
    pull the sockets from under a record still being handled."""
    if consumer is not None:
        consumer.stop()
    if thread is not None:
        thread.join(timeout=join_s)
    if consumer is not None:
        consumer.close()


def freeze_after_imports(modules: tuple[str, ...]) -> None:
    """Import ``modules`` and move every object alive now out of the cyclic collector's sight.

    What a service imports (torch, transformers, MLflow: ~500k objects) lives as long as the
    process, yet each full collection walks it: ~200 ms with every thread paused, which lands
    on whatever requests are running (measured in serving during a swap, docs/serving.md).
    Frozen, a full collection walks only what came later — milliseconds. Call it before the
    first model load: a model's own reference cycles must stay collectable.
    """
    for module in modules:
        importlib.import_module(module)
    gc.collect()  # what is garbage already is not frozen
    gc.freeze()

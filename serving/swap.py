"""Which version answers for each served model, and the blue/green swap between versions.

Everything here runs on the server's event loop, so a switch is one assignment: a request
takes a lease on the version that is current when it starts and keeps it to its last byte;
a new version becomes current only once the engine has loaded *and* warmed it; the old one is
closed when its last lease ends. A version that fails to load or warm never becomes current:
the old one keeps answering, the failure is counted and raised as an alert, and the version
is not tried again for ``retry_failed_s``.

What to serve is always read from the ``champion`` alias in MLflow: a ``champion.changed``
event or the periodic reconcile only *kick* a model, and a kicked model looks its alias up.
Kicks coalesce, so a burst of events costs one lookup, and a missed event costs at most one
reconcile interval. A rollback is just another alias change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from serving.champions import ChampionSource
from serving.engine import Engine, LoadedVersion
from serving.metrics import ServingMetrics
from uptake.errors import DependencyError, InputError, describe_exception
from uptake.events import AlertRaised

log = logging.getLogger(__name__)

COMPONENT = "serving"
SWAP_FAILED = "swap_failed"


class UnknownModel(InputError, LookupError):
    """The request names a model this server does not serve (404)."""


class NoChampion(DependencyError, LookupError):
    """The model is served here but no version is loaded yet (503)."""


@dataclass(eq=False)
class ServedVersion:
    """A loaded version and the requests it is answering."""

    model: str
    version: str
    loaded: LoadedVersion
    leases: int = 0
    retired: bool = False

    @property
    def label(self) -> str:
        return f"{self.model}/{self.version}"


@dataclass
class _Slot:
    model: str
    current: ServedVersion | None = None
    kick: asyncio.Event = field(default_factory=asyncio.Event)
    failed: dict[str, float] = field(default_factory=dict)  # version -> when it failed
    loading: str | None = None


class SwapManager:
    """The served models' current versions; ``kick`` makes one look up its champion."""

    def __init__(
        self,
        models: list[str],
        engine: Engine,
        source: ChampionSource,
        metrics: ServingMetrics,
        *,
        alert: Callable[[AlertRaised], object],  # the return (an offset) is not used
        retry_failed_s: float,
        on_served: Callable[[str, str], None] | None = None,
    ) -> None:
        self.models = list(models)
        self.engine = engine
        self.source = source
        self.metrics = metrics
        self.alert = alert
        self.retry_failed_s = retry_failed_s
        self.on_served = on_served
        self._slots = {m: _Slot(m) for m in self.models}
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._alerting: set[str] = set()  # models whose last swap failed (an open alert)

    # -- requests ---------------------------------------------------------------------------

    def acquire(self, model: str) -> ServedVersion:
        """A lease on the version answering for ``model`` now; pair with ``release``."""
        slot = self._slots.get(model)
        if slot is None:
            raise UnknownModel(model)
        if slot.current is None:
            raise NoChampion(model)
        live = slot.current
        live.leases += 1
        self.metrics.in_flight.labels(model).inc()
        return live

    def release(self, live: ServedVersion) -> None:
        live.leases -= 1
        self.metrics.in_flight.labels(live.model).dec()
        if live.retired and live.leases == 0:
            self._close_later(live)

    def current(self, model: str) -> ServedVersion | None:
        slot = self._slots.get(model)
        return slot.current if slot else None

    @property
    def ready(self) -> bool:
        return all(s.current is not None for s in self._slots.values())

    def status(self) -> dict[str, str | None]:
        return {m: (s.current.version if s.current else None) for m, s in self._slots.items()}

    # -- following the champion -------------------------------------------------------------

    def start(self, reconcile_interval_s: float) -> None:
        """Start one follower per model and the periodic reconcile (on the running loop)."""
        self._loop = asyncio.get_running_loop()
        for slot in self._slots.values():
            self._tasks.append(asyncio.create_task(self._follow(slot), name=f"follow-{slot.model}"))
            slot.kick.set()  # reconcile at start
        self._tasks.append(
            asyncio.create_task(self._reconcile_every(reconcile_interval_s), name="reconcile")
        )

    def kick(self, model: str | None = None) -> None:
        """Look up the champion of ``model`` (None: every model) soon. Any thread may call it."""
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is stopping
            self._loop.call_soon_threadsafe(self._kick, model)

    def _kick(self, model: str | None) -> None:
        for slot in self._slots.values():
            if model is None or slot.model == model:
                slot.kick.set()

    async def _reconcile_every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self._kick(None)

    async def _follow(self, slot: _Slot) -> None:
        while True:
            await slot.kick.wait()
            slot.kick.clear()
            try:
                await self.reconcile(slot)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # MLflow down, say: the next kick tries again
                log.warning("cannot reconcile %s: %s", slot.model, describe_exception(exc))

    async def reconcile(self, slot: _Slot) -> None:
        """Make ``slot`` serve its champion, if that is a version it can load."""
        wanted = await asyncio.to_thread(self.source.champion, slot.model)
        current = slot.current.version if slot.current else None
        if wanted is None:
            if current is not None:
                log.warning("%s has no champion alias; %s keeps answering", slot.model, current)
            return
        if wanted == current:
            return
        failed_at = slot.failed.get(wanted)
        if failed_at is not None and time.monotonic() - failed_at < self.retry_failed_s:
            return
        await self._swap(slot, wanted)

    async def _swap(self, slot: _Slot, version: str) -> None:
        label = f"{slot.model}/{version}"
        old = slot.current
        log.info("loading %s (now answering: %s)", label, old.label if old else "none")
        slot.loading = version
        started = time.monotonic()
        try:
            model_dir: Path = await asyncio.to_thread(self.source.download, slot.model, version)
            loaded = await self.engine.load(slot.model, version, model_dir)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(slot, version, describe_exception(exc), old)
            return
        finally:
            slot.loading = None
        new = ServedVersion(slot.model, version, loaded)
        slot.current = new  # the switch: from here on new requests get the new version
        slot.failed.pop(version, None)
        self.metrics.switched(slot.model, old.version if old else None, version)
        log.info(
            "%s answers for %s (loaded and warmed in %.1fs)",
            label,
            slot.model,
            time.monotonic() - started,
        )
        if old is not None:
            old.retired = True
            if old.leases == 0:
                self._close_later(old)
        if self.on_served is not None:
            await asyncio.to_thread(self._served, slot.model, version)
        if slot.model in self._alerting:
            self._alerting.discard(slot.model)
            if not self._alerting:
                await asyncio.to_thread(self._publish, self._resolved(slot.model, version))

    def _served(self, model: str, version: str) -> None:
        try:
            assert self.on_served is not None
            self.on_served(model, version)
        except Exception as exc:  # the timeline tag is nice to have, never worth a failure
            log.warning("cannot tag %s/%s as served: %s", model, version, describe_exception(exc))

    async def _failed(
        self, slot: _Slot, version: str, reason: str, old: ServedVersion | None
    ) -> None:
        slot.failed[version] = time.monotonic()
        self.metrics.swap_failures.labels(slot.model).inc()
        keeping = old.label if old else "nothing (no version loaded)"
        log.error(
            "%s/%s failed to load: %s; still answering: %s", slot.model, version, reason, keeping
        )
        self._alerting.add(slot.model)
        alert = AlertRaised(
            producer=COMPONENT,
            component=COMPONENT,
            condition=SWAP_FAILED,
            severity="error" if old is not None else "critical",
            summary=f"serving could not load {slot.model} v{version}; still answering: {keeping}",
            details={
                "registered_model": slot.model,
                "version": version,
                "reason": reason[:1000],
                "serving_version": old.version if old else "none",
            },
        )
        await asyncio.to_thread(self._publish, alert)

    def _resolved(self, model: str, version: str) -> AlertRaised:
        return AlertRaised(
            producer=COMPONENT,
            component=COMPONENT,
            condition=SWAP_FAILED,
            severity="info",
            summary=f"serving loads champions again ({model} v{version} answers)",
            details={"registered_model": model, "version": version},
            resolved=True,
        )

    def _publish(self, alert: AlertRaised) -> None:
        try:
            self.alert(alert)
        except Exception as exc:  # the broker is down: the metric and the log still say it
            log.error("cannot publish alert %s: %s", alert.key(), describe_exception(exc))

    def _close_later(self, live: ServedVersion) -> None:
        task = asyncio.get_running_loop().create_task(self._close(live))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, live: ServedVersion) -> None:
        try:
            await live.loaded.close()
            log.info("%s closed (its last request finished)", live.label)
        except Exception as exc:
            log.warning("closing %s failed: %s", live.label, describe_exception(exc))

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*self._closing, return_exceptions=True)
        for slot in self._slots.values():
            if slot.current is not None:
                await self._close(slot.current)
                slot.current = None
        await self.engine.aclose()

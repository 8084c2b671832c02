"""Which version answers for each served model, and the blue/green swap between versions.

Everything here runs on the server's event loop, so a switch is one assignment: a request
takes a lease on the version that is current when it starts (``async with manager.lease``)
and keeps it to its last byte; a new version becomes current only once the engine has loaded
*and* warmed it; the old one is closed when its last lease ends. A version that fails to load
or warm never becomes current: the old one keeps answering.

What to serve is always read from the ``champion`` alias in MLflow: a ``champion.changed``
event or the periodic reconcile only *kick* a model, and a kicked model looks its alias up.
Kicks coalesce, so a burst of events costs one lookup, and a missed event costs at most one
reconcile interval. A rollback is just another alias change.

**The latest decision wins.** Each model's follower keeps looking the alias up while a load
is under way: a lookup that wants another version cancels the load (a load the engine cannot
stop at once is discarded when it completes), and a loaded version is switched in only if it
is still the one the last lookup wanted. So a rollback during a forward load takes effect at
once, the forward version is never switched in, and the old version is never reloaded.

**Bounded, and broken versions left alone.** A download has ``download_timeout_s`` and a
load with its warm-up ``load_timeout_s``; past it the attempt is a failure (a download's
thread cannot be stopped: it is left to finish into its own temporary folder). A cached copy
that fails its checksum or its load is downloaded once more before the version counts as
broken. A broken version is tried again after ``retry_failed_s``, doubled after each further
failure up to ``retry_failed_max_s``, and raises one ``swap_failed`` alert however often it
fails; the alert is resolved, naming the version that answers, once the model serves its
champion again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from serving.champions import ChampionSource, verify_manifest
from serving.engine import Engine, LoadedVersion
from serving.metrics import ServingMetrics
from uptake.errors import DependencyError, InputError, describe_exception
from uptake.events import AlertRaised
from uptake.retention import stamp

log = logging.getLogger(__name__)

COMPONENT = "serving"
SWAP_FAILED = "swap_failed"


class UnknownModel(InputError, LookupError):
    """The request names a model this server does not serve (404)."""


class NoChampion(DependencyError, LookupError):
    """The model is served here but no version is loaded yet (503)."""


class LoadTimeout(DependencyError, TimeoutError):
    """A version's download or load ran past its deadline."""


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
class _Failures:
    """A version that failed to load: how often, and when it may be tried again."""

    count: int = 0
    retry_at: float = 0.0


@dataclass
class _Slot:
    model: str
    current: ServedVersion | None = None
    kick: asyncio.Event = field(default_factory=asyncio.Event)
    wanted: str | None = None  # what the last alias lookup said
    loading: str | None = None
    load: asyncio.Task[None] | None = None
    failed: dict[str, _Failures] = field(default_factory=dict)
    redownloaded: set[str] = field(default_factory=set)  # versions fetched again once already


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
        retry_failed_max_s: float = 3600.0,
        download_timeout_s: float = 1800.0,
        load_timeout_s: float = 1800.0,
        on_served: Callable[[str, str], None] | None = None,
        keep_versions: int | None = None,
    ) -> None:
        self.models = list(models)
        self.engine = engine
        self.source = source
        self.metrics = metrics
        self.alert = alert
        self.retry_failed_s = retry_failed_s
        self.retry_failed_max_s = max(retry_failed_max_s, retry_failed_s)
        self.download_timeout_s = download_timeout_s
        self.load_timeout_s = load_timeout_s
        self.on_served = on_served
        self.keep_versions = keep_versions  # None: the cache is never pruned here
        self._slots = {m: _Slot(m) for m in self.models}
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._alerting: set[str] = set()  # models with an open swap_failed alert

    # -- requests ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(self, model: str) -> AsyncIterator[ServedVersion]:
        """The version answering for ``model`` now, held until the block ends. Raises
        ``UnknownModel`` or ``NoChampion``."""
        slot = self._slots.get(model)
        if slot is None:
            raise UnknownModel(model)
        if slot.current is None:
            raise NoChampion(model)
        served = slot.current
        served.leases += 1
        self.metrics.in_flight.labels(model).inc()
        try:
            yield served
        finally:
            served.leases -= 1
            self.metrics.in_flight.labels(model).dec()
            if served.retired and served.leases == 0:
                self._close_later(served)

    def current(self, model: str) -> ServedVersion | None:
        slot = self._slots.get(model)
        return slot.current if slot else None

    @property
    def ready(self) -> bool:
        return all(s.current is not None for s in self._slots.values())

    def status(self) -> dict[str, str | None]:
        return {m: (s.current.version if s.current else None) for m, s in self._slots.items()}

    def queue_depths(self) -> dict[str, int]:
        """Requests waiting on each model's version answering (0 while none is loaded)."""
        return {
            m: (s.current.loaded.queue_depth if s.current else 0) for m, s in self._slots.items()
        }

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
        """Make ``slot`` serve its champion, if that is a version it can load. Returns while
        a load runs on: the follower goes on looking up the alias meanwhile."""
        wanted = await asyncio.to_thread(self.source.champion, slot.model)
        slot.wanted = wanted
        current = slot.current.version if slot.current else None
        if slot.load is not None and not slot.load.done():
            if wanted == slot.loading:
                return  # the load under way is still the decision
            log.info(
                "%s: the champion is now %s; dropping the load of %s",
                slot.model,
                wanted,
                slot.loading,
            )
            slot.load.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await slot.load
        if wanted is None:
            if current is not None:
                log.warning("%s has no champion alias; %s keeps answering", slot.model, current)
            return
        if wanted == current:
            await self._resolve(slot)
            return
        failures = slot.failed.get(wanted)
        if failures is not None and time.monotonic() < failures.retry_at:
            return
        slot.loading = wanted
        slot.load = asyncio.create_task(
            self._swap(slot, wanted), name=f"load-{slot.model}-{wanted}"
        )

    async def _swap(self, slot: _Slot, version: str) -> None:
        label = f"{slot.model}/{version}"
        old = slot.current
        log.info("loading %s (now answering: %s)", label, old.label if old else "none")
        started = time.monotonic()
        try:
            loaded = await self._load(slot, version)
        except asyncio.CancelledError:
            log.info("%s: load cancelled (a newer decision)", label)
            raise
        except Exception as exc:
            await self._failed(slot, version, describe_exception(exc), old)
            return
        finally:
            slot.loading = None
        if slot.wanted != version:  # a later lookup wants another version: never switch
            log.info("%s loaded, but the champion is now %s: discarded", label, slot.wanted)
            self._close_later(ServedVersion(slot.model, version, loaded))
            return
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
        if self.keep_versions is not None:
            await asyncio.to_thread(self._prune, slot.model, version, self.keep_versions)
        if self.on_served is not None:
            await asyncio.to_thread(self._served, slot.model, version)
        await self._resolve(slot)

    async def _load(self, slot: _Slot, version: str) -> LoadedVersion:
        """Download (unless cached), check and load ``version``, each step bounded; a cached
        copy that fails its checksum or its load is fetched once more and tried again."""
        cached = self.source.cached(slot.model, version)
        try:
            return await self._load_from(slot.model, version)
        except (asyncio.CancelledError, LoadTimeout):
            raise
        except Exception as exc:
            if cached is None or version in slot.redownloaded:
                raise
            slot.redownloaded.add(version)
            log.warning(
                "%s/%s: the cached copy failed (%s); downloading it again",
                slot.model,
                version,
                describe_exception(exc),
            )
            await asyncio.to_thread(self.source.discard, slot.model, version)
            return await self._load_from(slot.model, version)

    async def _load_from(self, model: str, version: str) -> LoadedVersion:
        try:
            model_dir: Path = await asyncio.wait_for(
                asyncio.to_thread(self.source.download, model, version), self.download_timeout_s
            )
        except TimeoutError:
            raise LoadTimeout(
                f"the download of {model}/{version} took longer than {self.download_timeout_s:g}s"
            ) from None
        await asyncio.to_thread(verify_manifest, model_dir)
        await asyncio.to_thread(stamp, model_dir)  # recently used: kept by the cache's pruning
        origin = await asyncio.to_thread(self.source.origin, model, version)
        try:
            return await asyncio.wait_for(
                self.engine.load(model, version, model_dir, origin), self.load_timeout_s
            )
        except TimeoutError:
            raise LoadTimeout(
                f"loading {model}/{version} took longer than {self.load_timeout_s:g}s"
            ) from None

    def _prune(self, model: str, served: str, keep: int) -> None:
        try:
            self.source.prune(model, served, keep)
        except Exception as exc:  # housekeeping: never a reason to stop serving
            log.warning("cannot prune %s's cached versions: %s", model, describe_exception(exc))

    def _served(self, model: str, version: str) -> None:
        try:
            assert self.on_served is not None
            self.on_served(model, version)
        except Exception as exc:  # the timeline tag is nice to have, never worth a failure
            log.warning("cannot tag %s/%s as served: %s", model, version, describe_exception(exc))

    async def _failed(
        self, slot: _Slot, version: str, reason: str, old: ServedVersion | None
    ) -> None:
        failures = slot.failed.setdefault(version, _Failures())
        failures.count += 1
        delay = min(self.retry_failed_s * 2 ** (failures.count - 1), self.retry_failed_max_s)
        failures.retry_at = time.monotonic() + delay
        self.metrics.swap_failures.labels(slot.model).inc()
        keeping = old.label if old else "nothing (no version loaded)"
        log.error(
            "%s/%s failed to load (attempt %d, next in %.1fs): %s; still answering: %s",
            slot.model,
            version,
            failures.count,
            delay,
            reason,
            keeping,
        )
        if self._loop is not None:  # try again when the wait is over, without an event
            self._loop.call_later(delay + 0.05, self._kick, slot.model)
        if failures.count > 1:
            return  # one alert per broken version, however often it fails
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

    async def _resolve(self, slot: _Slot) -> None:
        """Resolve the model's open alert: it serves its champion again (named)."""
        if slot.model not in self._alerting or slot.current is None:
            return
        self._alerting.discard(slot.model)
        await asyncio.to_thread(self._publish, self._resolved(slot.model, slot.current.version))

    def _resolved(self, model: str, version: str) -> AlertRaised:
        return AlertRaised(
            producer=COMPONENT,
            component=COMPONENT,
            condition=SWAP_FAILED,
            severity="info",
            summary=f"serving answers with {model}'s champion again (v{version})",
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
        loads = [s.load for s in self._slots.values() if s.load is not None]
        for task in (*self._tasks, *loads):
            task.cancel()
        await asyncio.gather(*self._tasks, *loads, return_exceptions=True)
        await asyncio.gather(*self._closing, return_exceptions=True)
        for slot in self._slots.values():
            if slot.current is not None:
                await self._close(slot.current)
                slot.current = None
        await self.engine.aclose()

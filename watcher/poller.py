"""One source's detection: scan, compare with what the store has seen, filter, decide.

A poll is all or nothing: the scan and every per-repo lookup must succeed before a single
decision is written (one transaction), so a poll cut short by a 429 or a broken page never
records a partial baseline nor publishes anything from partial data. Publishing is the
outbox's job; the poller only writes ``pending`` releases.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from uptake.events import ReleaseDetected, release_id
from watcher.filters import evaluate, license_of
from watcher.snapshot import RepoSnapshot
from watcher.sources.base import Source
from watcher.store import Decision, KnownRepo, Store

log = logging.getLogger(__name__)


@dataclass
class PollResult:
    source: str
    first_run: bool = False
    scanned: int = 0
    released: list[str] = field(default_factory=list)  # ids of new pending releases
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (repo id, reason)
    deferred: list[tuple[str, str]] = field(default_factory=list)
    baseline: int = 0


def _now() -> datetime:
    return datetime.now(UTC)


class Poller:
    def __init__(self, source: Source, store: Store) -> None:
        self.source = source
        self.store = store

    @property
    def name(self) -> str:
        return self.source.name

    def initialized(self) -> bool:
        state = self.store.source_state(self.name)
        return state is not None and state.initialized_at is not None

    # -- full poll --------------------------------------------------------------------------

    def poll(self) -> PollResult:
        state = self.store.source_state(self.name)
        first = state is None or state.initialized_at is None
        scope = self.source.scope()
        # authors added to the config since the baseline get a baseline of their own, or
        # adding an org would publish its whole recent history
        fresh = frozenset() if first else frozenset(scope) - set(state.scope if state else ())
        known = None if first else self.store.known(self.name)
        snaps = self.source.scan(known, fresh)  # SourceFault: nothing below happens
        if first:
            decisions = self._baseline(snaps)
        else:
            assert known is not None
            decisions = []
            for snap in snaps:
                row = known.get(snap.repo_id)
                if row is None and fresh and self.source.scope_of(snap) in fresh:
                    decisions.append(Decision(snap, "baseline"))
                elif self._is_candidate(snap, row):
                    decisions.append(self._decide(snap, row))
            self._refresh_fingerprints(snaps, known)
            if fresh:
                log.info("source %s: new in scope %s: baseline recorded", self.name, sorted(fresh))
        return self._record(decisions, scanned=len(snaps), first=first, scope=scope)

    def poll_repo(self, repo_id: str) -> PollResult:
        """Look at one repo now (a verified webhook); the hub's answer is the truth."""
        state = self.store.source_state(self.name)
        if state is None or state.initialized_at is None:
            return self.poll()  # no baseline yet: a full poll makes one
        snap = self.source.lookup(repo_id)
        if snap is None:
            return PollResult(self.name)
        if self.source.scope_of(snap) not in state.scope:
            return self.poll()  # a newly configured author: its baseline comes first
        row = self.store.known(self.name).get(repo_id)
        if not self._is_candidate(snap, row):
            return PollResult(self.name, scanned=1)
        return self._record([self._decide(snap, row)], scanned=1, first=False)

    # -- deciding ---------------------------------------------------------------------------

    def _is_candidate(self, snap: RepoSnapshot, row: KnownRepo | None) -> bool:
        if row is None or row.outcome == "deferred":
            return True
        return self.source.config.track_updates and row.revision != snap.revision

    def _baseline(self, snaps: list[RepoSnapshot]) -> list[Decision]:
        """First run: what exists is the baseline, except the ``backfill`` newest accepted."""
        decisions = {s.repo_id: Decision(s, "baseline") for s in snaps}
        wanted = self.source.config.backfill
        if wanted:
            oldest = datetime.min.replace(tzinfo=UTC)
            newest_first = sorted(
                snaps, key=lambda s: s.created_at or s.last_modified or oldest, reverse=True
            )
            picked = 0
            for snap in newest_first:
                if picked >= wanted:
                    break
                decision = self._decide(snap, None)
                if decision.outcome == "released":
                    picked += 1
                if decision.outcome != "deferred":
                    decisions[snap.repo_id] = decision
        return list(decisions.values())

    def _decide(self, snap: RepoSnapshot, row: KnownRepo | None) -> Decision:
        config = self.source.config
        verdict = evaluate(snap, config.filters, has_token=self.source.has_token)
        if verdict.outcome == "accept" and not snap.detailed:
            detailed = self.source.details(snap)  # SourceFault propagates: poll fails
            if detailed is None:
                return self._defer(
                    snap, row, "not_found", "gone, or revision replaced, since listed"
                )
            snap = detailed
            verdict = evaluate(snap, config.filters, has_token=self.source.has_token)
        if verdict.outcome == "skip":
            return Decision(snap, "skipped", verdict.reason, verdict.detail)
        if verdict.outcome == "defer":
            return self._defer(snap, row, verdict.reason, verdict.detail)
        is_update = row is not None and row.outcome != "deferred"
        repo_time = (snap.last_modified if is_update else snap.created_at) or snap.last_modified
        return Decision(snap, "released", event=self._event(snap), repo_time=repo_time)

    def _defer(
        self, snap: RepoSnapshot, row: KnownRepo | None, reason: str, detail: str
    ) -> Decision:
        now = _now()
        since = (
            row.deferred_since if row is not None and row.outcome == "deferred" else None
        ) or now
        if (now - since).total_seconds() >= self.source.config.settle_s:
            return Decision(snap, "skipped", reason, f"{detail} (still so after settle time)")
        return Decision(snap, "deferred", reason, detail, deferred_since=since)

    def _event(self, snap: RepoSnapshot) -> ReleaseDetected:
        return ReleaseDetected(
            release_id=release_id(self.name, snap.repo_id, snap.revision),
            source=self.name,
            repo_id=snap.repo_id,
            revision=snap.revision,
            endpoint=self.source.location(snap.repo_id),
            created_at=snap.created_at,
            license=license_of(snap),
            pipeline_tag=snap.pipeline_tag,
            library=snap.library,
            num_parameters=snap.num_parameters,
            requires_remote_code=snap.requires_remote_code,
            gated=snap.gated,
            producer="watcher",
        )

    # -- recording --------------------------------------------------------------------------

    def _refresh_fingerprints(self, snaps: list[RepoSnapshot], known: dict[str, KnownRepo]) -> None:
        changed = {
            s.repo_id: s.fingerprint
            for s in snaps
            if s.fingerprint
            and (row := known.get(s.repo_id)) is not None
            and row.fingerprint != s.fingerprint
            and not self._is_candidate(s, row)
        }
        if changed:
            self.store.refresh_fingerprints(self.name, changed)

    def _record(
        self,
        decisions: list[Decision],
        *,
        scanned: int,
        first: bool,
        scope: list[str] | None = None,
    ) -> PollResult:
        created = self.store.apply(self.name, decisions, initialize=first, scope=scope)
        result = PollResult(self.name, first_run=first, scanned=scanned, released=created)
        for d in decisions:
            if d.outcome == "skipped":
                result.skipped.append((d.snap.repo_id, d.reason))
                log.info(
                    "source %s: skipped %s: %s (%s)", self.name, d.snap.repo_id, d.reason, d.detail
                )
            elif d.outcome == "deferred":
                result.deferred.append((d.snap.repo_id, d.reason))
                log.info(
                    "source %s: not yet %s: %s (%s)", self.name, d.snap.repo_id, d.reason, d.detail
                )
            elif d.outcome == "baseline":
                result.baseline += 1
        for rid in created:
            log.info("source %s: new release %s", self.name, rid)
        if first:
            log.info(
                "source %s: first run, %d repos recorded as baseline, %d backfilled",
                self.name,
                result.baseline,
                len(created),
            )
        return result

"""The interface every source implements; the poller does the deciding."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from uptake.watcher_config import DirSourceConfig, HfSourceConfig
from watcher.snapshot import RepoSnapshot
from watcher.store import KnownRepo


class Source(Protocol):
    @property
    def config(self) -> HfSourceConfig | DirSourceConfig:
        """The source's own settings (read-only here, so each source may narrow the type)."""
        ...

    @property
    def name(self) -> str: ...

    @property
    def endpoint(self) -> str: ...

    @property
    def has_token(self) -> bool: ...

    def location(self, repo_id: str) -> str:
        """Where this repo's weights come from (hub endpoint, folder), carried in the event."""
        ...

    def scope(self) -> list[str]:
        """What the source watches (authors, a search, a directory): a baseline covers these."""
        ...

    def scope_of(self, snap: RepoSnapshot) -> str:
        """The scope entry a repo belongs to."""
        ...

    def scan(
        self, known: Mapping[str, KnownRepo] | None, fresh: frozenset[str] = frozenset()
    ) -> list[RepoSnapshot]:
        """Everything the source lists now. ``known=None`` (first run) or a ``fresh`` scope
        entry (newly configured): list that part exhaustively, it becomes baseline.

        Raise ``SourceFault`` on any failure: a scan is complete or it is nothing.
        """
        ...

    def details(self, snap: RepoSnapshot) -> RepoSnapshot | None:
        """The snapshot completed by a per-repo lookup at its revision; None if it is gone."""
        ...

    def lookup(self, repo_id: str) -> RepoSnapshot | None:
        """One repo's current detailed snapshot (webhook-triggered polls); None if absent."""
        ...

    def watches(self, repo_id: str) -> bool:
        """Whether a webhook about ``repo_id`` concerns this source."""
        ...

    def close(self) -> None: ...

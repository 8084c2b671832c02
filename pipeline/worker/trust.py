"""Where a release's files come from: the configured source the event names, never the event.

The bus is untrusted (DESIGN.md "Trust"): a ``release.detected`` says which source and repo,
but the endpoint, the token variable and the root folder come from the worker's own
``sources:`` config. An event naming an unknown source, or carrying an endpoint that differs
from its source's, is refused as permanent before any request or copy, the differing fields
named; a directory release must resolve inside its source's root (no absolute repo id, no
``..``, no link leading out).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from uptake.errors import PermanentError
from uptake.events import ReleaseDetected
from uptake.urls import redact_userinfo
from uptake.watcher_config import DirSourceConfig, HfSourceConfig


class SourceRefused(PermanentError):
    """A release whose source is not configured, or whose event disagrees with its config."""


class TrustedSource(BaseModel):
    """What the worker fetches a release from, taken from its own config: for a hub (``hf``)
    source the endpoint and the token variable, for a ``dir`` source its root folder."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: Literal["hf", "dir"]
    endpoint: str  # hub URL (user-info kept: it is sent as basic auth), or the dir root
    token_env: str | None = None

    @classmethod
    def of(cls, config: HfSourceConfig | DirSourceConfig) -> TrustedSource:
        if isinstance(config, HfSourceConfig):
            return cls(
                name=config.name,
                kind="hf",
                endpoint=config.endpoint.rstrip("/"),
                token_env=config.token_env,
            )
        return cls(name=config.name, kind="dir", endpoint=str(config.path.expanduser().resolve()))

    @property
    def public(self) -> str:
        """The endpoint as events and logs may show it (no user-info)."""
        return redact_userinfo(self.endpoint) if self.kind == "hf" else self.endpoint

    @property
    def root(self) -> Path:
        return Path(self.endpoint)


def trusted_source(
    sources: Sequence[HfSourceConfig | DirSourceConfig], release: ReleaseDetected
) -> TrustedSource:
    """The configured source ``release`` names, checked against the event (``check_release``).

    Raises SourceRefused for a source that is not configured here."""
    config = next((s for s in sources if s.name == release.source), None)
    if config is None:
        known = ", ".join(repr(s.name) for s in sources) or "none"
        raise SourceRefused(
            f"release {release.release_id}: source {release.source!r} is not configured here "
            f"(configured: {known}); the worker fetches only from its own sources"
        )
    source = TrustedSource.of(config)
    check_release(source, release)
    return source


def check_release(source: TrustedSource, release: ReleaseDetected) -> None:
    """Raise SourceRefused naming every field where the event differs from ``source``."""
    differing: list[str] = []
    if release.source != source.name:
        differing.append(f"source {release.source!r} (configured: {source.name!r})")
    if source.kind == "hf":
        if release.endpoint is not None and _url(release.endpoint) != _url(source.public):
            differing.append(f"endpoint {release.endpoint!r} (configured: {source.public!r})")
    else:
        folder = release_folder(source, release)
        if release.endpoint is not None and Path(release.endpoint) != folder:
            differing.append(f"endpoint {release.endpoint!r} (configured: {str(folder)!r})")
    if differing:
        raise SourceRefused(
            f"release {release.release_id} differs from source {source.name!r}: "
            f"{'; '.join(differing)}; refused (the worker fetches only from its own sources)"
        )


def release_folder(source: TrustedSource, release: ReleaseDetected) -> Path:
    """``<root>/<org>/<model>`` of a directory release, or SourceRefused when the repo id is
    not two plain folder names or the folder resolves outside the source's root."""
    parts = release.repo_id.split("/")
    if len(parts) != 2 or any(
        not p or p in {".", ".."} or p.startswith(".") or "\\" in p or "\0" in p for p in parts
    ):
        raise SourceRefused(
            f"release {release.release_id}: repo id {release.repo_id!r} is not <org>/<model> "
            f"inside source {source.name!r}; refused"
        )
    root = source.root
    folder = root.joinpath(*parts)
    real = Path(os.path.realpath(folder))
    if not real.is_relative_to(root):
        raise SourceRefused(
            f"release {release.release_id}: {folder} resolves to {real}, outside the root "
            f"{root} of source {source.name!r}; refused"
        )
    return folder


def _url(url: str) -> str:
    return url.rstrip("/")

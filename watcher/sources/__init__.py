"""Where releases come from: a model hub (``hf``) or a shared directory (``dir``)."""

from __future__ import annotations

from uptake.settings import Settings
from uptake.watcher_config import DirSourceConfig, HfSourceConfig
from watcher.sources.base import Source


def build_source(config: HfSourceConfig | DirSourceConfig, settings: Settings) -> Source:
    if isinstance(config, HfSourceConfig):
        from watcher.sources.hf import HfSource

        return HfSource(config, settings)
    from watcher.sources.dirs import DirSource

    return DirSource(config)


__all__ = ["Source", "build_source"]

"""Which registered models uptake manages: the only ones it decides on.

Anyone who can write ``uptake.runs`` can name any registered model in a
``candidate.registered``; the promoter acts only on the models configured here (DESIGN.md
"Trust"), so an event for another model is dead-lettered, never decided. Configured tracks
(``tracks:``) each add their registered model: this function is the one place.
"""

from __future__ import annotations

from uptake.errors import PermanentError
from uptake.settings import Settings


class UnmanagedModel(PermanentError):
    """An event names a registered model uptake does not manage: dead-lettered at once."""


def managed_models(settings: Settings) -> frozenset[str]:
    """``mlflow.registered_model``, every model under ``registry.models`` and every track's."""
    return frozenset(
        {
            settings.mlflow.registered_model,
            *settings.registry.models,
            *(t.registered_model for t in settings.tracks),
        }
    )


def require_managed(settings: Settings, model: str) -> None:
    """Raise ``UnmanagedModel`` unless uptake manages ``model``."""
    managed = managed_models(settings)
    if model not in managed:
        raise UnmanagedModel(
            f"registered model {model!r} is not managed by uptake "
            f"(managed: {', '.join(sorted(managed))}; "
            "add a track for it or name it under registry.models)"
        )

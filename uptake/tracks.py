"""Adoption tracks: one line of adoption each (its data and recipe, suite, registered model).

A team may adopt every release into several tracks (one per client firm, say); DESIGN.md
"Adoption tracks". The worker fans a release out into one job per matching track, the
registry manages each track's registered model, serving serves each track's champion. So the
config model lives in the core and every service reads the same list.

Paths are resolved against the directory of the config file that names them (the process's
working directory when there is no file), so ``examples/uptake.yaml`` can say
``recipe: legal/recipe.yaml`` and mean the file next to it wherever uptake is started.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from uptake.config_model import ConfigModel

_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
# MLflow registered model names: no "/" or ":" (they would break models:/ URIs)
_REGISTERED_MODEL = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$"


class Track(ConfigModel):
    """One adoption track; its gate overrides live under ``registry.models.<registered_model>``."""

    name: str = Field(pattern=_NAME, description="Unique track name (`[a-z0-9][a-z0-9_-]*`).")
    registered_model: str = Field(
        pattern=_REGISTERED_MODEL,
        description="Its MLflow registered model (unique; gate overrides: `registry.models`).",
    )
    recipe: Path = Field(
        description="Training recipe YAML (docs/training.md), relative to the config file."
    )
    suite: Path = Field(
        description="Held-out suite: rubric JSONL (docs/evaluation.md) or a folder of LAB-format "
        "tasks (docs/agentic.md), relative to the config file."
    )
    sources: tuple[str, ...] | None = Field(
        None, min_length=1, description="Names of the watcher sources feeding it; null: every one."
    )

    def accepts(self, source: str) -> bool:
        """Whether a release from ``source`` is adopted into this track."""
        return self.sources is None or source in self.sources


def resolve_track_paths(tracks: list[Track], base: Path) -> list[Track]:
    """The tracks with relative recipe/suite paths made absolute against ``base``."""
    return [
        t.model_copy(
            update={
                "recipe": t.recipe if t.recipe.is_absolute() else (base / t.recipe).resolve(),
                "suite": t.suite if t.suite.is_absolute() else (base / t.suite).resolve(),
            }
        )
        for t in tracks
    ]


def check_unique(tracks: list[Track]) -> list[Track]:
    """``tracks`` unchanged; ValueError when two share a name or a registered model."""
    for attr in ("name", "registered_model"):
        seen: set[str] = set()
        for t in tracks:
            value = getattr(t, attr)
            if value in seen:
                raise ValueError(f"two tracks share the {attr.replace('_', ' ')} {value!r}")
            seen.add(value)
    return tracks

"""Every config model derives from one strict, read-only base (uptake/config_model.py)."""

from __future__ import annotations

import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from pipeline.train.recipe import Recipe
from uptake.config_model import ConfigModel
from uptake.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def _models(annotation: object, seen: set[type]) -> set[type]:
    """Every pydantic model reachable from a field annotation (unions, lists, dicts)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation not in seen:
            seen.add(annotation)
            for field in annotation.model_fields.values():
                _models(field.annotation, seen)
        return seen
    for arg in typing.get_args(annotation):
        _models(arg, seen)
    if isinstance(annotation, types.UnionType):
        for arg in annotation.__args__:
            _models(arg, seen)
    return seen


@pytest.mark.parametrize("root", [Settings, Recipe], ids=lambda r: r.__name__)
def test_every_section_is_a_config_model(root: type[BaseModel]) -> None:
    models = _models(root, set()) - {Settings}
    assert len(models) > 5, models  # the walk found the sections
    loose = sorted(m.__name__ for m in models if not issubclass(m, ConfigModel))
    assert loose == []
    for model in models:
        assert model.model_config.get("extra") == "forbid", model
        assert model.model_config.get("frozen") is True, model


def test_a_loaded_config_is_read_only() -> None:
    settings = load_settings(ROOT / "examples" / "uptake.yaml")
    with pytest.raises(ValidationError, match="frozen"):
        settings.watcher.backoff_max_s = 1.0  # type: ignore[misc]
    changed = settings.watcher.model_copy(update={"backoff_max_s": 1.0})
    assert changed.backoff_max_s == 1.0 and settings.watcher.backoff_max_s == 900.0


def test_seconds_given_as_numbers_or_numeric_env_text_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UPTAKE_WATCHER__BACKOFF_MAX_S", "60")  # env values are always text
    settings = load_settings(None, registry={"lease_s": 5})
    assert settings.watcher.backoff_max_s == 60.0 and settings.registry.lease_s == 5.0

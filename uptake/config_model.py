"""The base of every config model: strict, read-only, and one way to write a duration.

Unknown keys are typos, and typos are errors. A loaded config is never changed in place
(``model_copy(update=...)`` makes a changed copy), so every reader sees what was loaded.

Durations are plain numbers with the unit in the key: ``_s`` seconds for everything uptake
defines (``interval_s: 300``), and ``_ms`` only where the key is Kafka's own
(``kafka.max_poll_interval_ms``). A number cannot be misread the way ``"5m"`` (minutes or
months?) can, it reads the same in YAML, env and JSON, and the key says the unit where the
value is used. The other forms, ``interval: 5m`` or ``interval_s: 5m``, are refused with one
line that says what to write instead.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_HUMAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h|d)\s*$")
_SUFFIXES = {"_s": 1.0, "_ms": 1000.0}  # key suffix -> units per second
_UNIT_NAMES = {"_s": "seconds", "_ms": "milliseconds"}


def _human_seconds(value: Any) -> float | None:
    """``"5m"`` as 300.0: only to say what to write instead; never accepted as a value."""
    if isinstance(value, str) and (match := _HUMAN.match(value)):
        return float(match[1]) * _UNITS[match[2]]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _instead(key: str, suffix: str, value: Any) -> str:
    seconds = _human_seconds(value)
    number = f"{seconds * _SUFFIXES[suffix]:g}" if seconds is not None else "<number>"
    return f"durations are {_UNIT_NAMES[suffix]}: write {key}: {number}"


class ConfigModel(BaseModel):
    """Base of every config section (settings, registry, watcher, training recipe)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _durations_are_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        errors: list[InitErrorDetails] = []
        for key, value in data.items():
            if not isinstance(key, str):
                continue
            if key in cls.model_fields:
                suffix = next((s for s in _SUFFIXES if key.endswith(s)), None)
                if suffix and isinstance(value, str) and _HUMAN.match(value):
                    message = _instead(key, suffix, value)
                    errors.append(_error(key, message, value))
                continue
            for suffix in _SUFFIXES:
                if f"{key}{suffix}" in cls.model_fields:
                    errors.append(_error(key, _instead(f"{key}{suffix}", suffix, value), value))
                    break
        if errors:
            # raised as a ValidationError so each error keeps its own field path
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return data


def _error(key: str, message: str, value: Any) -> InitErrorDetails:
    return InitErrorDetails(
        type=PydanticCustomError("duration_unit", message), loc=(key,), input=value
    )

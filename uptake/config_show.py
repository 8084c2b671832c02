"""The effective settings, each value with the source it came from (``uptake config show``).

A value comes from the environment, the config file or the code's default, the first that
sets it winning (``uptake.settings``). Which one is read from what each source gives
(``source_values``), so the answer is the loader's own. A list set by a source replaces the
lower sources' list as a whole: an entry's unset keys are then defaults, not the file's.

Secrets never show: ``SecretStr`` fields print as ``**********``, and so does the password
of a URL (``postgresql://uptake:**********@db/uptake``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from uptake.settings import config_path, load_settings, source_values

MASK = "**********"
DEFAULT = "default"
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:)[^/@\s]+@")

Key = tuple[str | int, ...]


class Entry(BaseModel):
    """One setting's effective value and where it came from."""

    key: str = Field(description="Dotted key path; list entries by index (`tracks.0.name`).")
    value: Any = Field(description="The effective value as JSON, secrets masked.")
    source: str = Field(description="`env`, `file` or `default` (`override`: from code).")


class EffectiveSettings(BaseModel):
    """Every setting of one load, in the models' order."""

    config: str | None = Field(description="The config file read; null: none.")
    entries: list[Entry]


def effective_settings(config: str | Path | None = None) -> EffectiveSettings:
    """Load the settings (ConfigError, exit 2, when invalid) and tell each value's source."""
    settings = load_settings(config)
    states = source_values(config)
    path = config_path(config)
    entries = [
        Entry(key=".".join(str(k) for k in key), value=_masked(value), source=origin(key, states))
        for key, value in _leaves((), settings.model_dump(mode="json"))
    ]
    return EffectiveSettings(config=str(path) if path else None, entries=entries)


def origin(key: Key, states: list[tuple[str, dict[str, Any]]]) -> str:
    """The first source (highest precedence first) that sets ``key``; ``default`` if none."""
    for label, state in states:
        found, replaced = _lookup(state, key)
        if found:
            return label
        if replaced:  # this source's list replaced the lower ones'
            return DEFAULT
    return DEFAULT


def _lookup(state: Any, key: Key) -> tuple[bool, bool]:
    """``(found, replaced)``: whether ``state`` sets ``key``, and whether the path went
    through a list this source sets as a whole."""
    node, replaced = state, False
    for part in key:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int):
            replaced = True
            if part >= len(node):
                return False, replaced
            node = node[part]
        else:
            return False, replaced
    return True, replaced


def _leaves(prefix: Key, value: Any) -> list[tuple[Key, Any]]:
    """Every leaf under ``value``: mappings and lists of mappings are walked, the rest (a list
    of names, an empty map) is one value."""
    if isinstance(value, dict) and value:
        return [leaf for k, v in value.items() for leaf in _leaves((*prefix, k), v)]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [leaf for i, v in enumerate(value) for leaf in _leaves((*prefix, i), v)]
    return [(prefix, value)]


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return _URL_PASSWORD.sub(rf"\g<1>{MASK}@", value)
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value

"""Settings document themselves: every field has a description, and the reference pages are
generated from those descriptions (uptake/config_reference.py)."""

from __future__ import annotations

import os
import shutil
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr
from pydantic_settings import EnvSettingsSource

from pipeline.train.recipe import Recipe
from tests.core.cli_helpers import run_uptake
from uptake.config_model import ConfigModel
from uptake.config_reference import (
    PAGES,
    ReferencePage,
    committed_block,
    reference_tables,
    render,
)
from uptake.settings import SECRET_FIELDS, Settings

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "uptake config reference --write"


def _models(annotation: object, seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    """Every pydantic model reachable from an annotation (unions, lists, maps, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation not in seen:
            seen.add(annotation)
            for field in annotation.model_fields.values():
                _models(field.annotation, seen)
        return seen
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType):
        args = annotation.__args__
    for arg in args:
        _models(arg, seen)
    return seen


def _subclasses(cls: type) -> set[type]:
    return {s for sub in cls.__subclasses__() for s in (sub, *_subclasses(sub))}


def test_every_setting_has_a_description() -> None:
    models = _models(Settings, set()) | _models(Recipe, set()) | _subclasses(ConfigModel)
    assert len(models) > 25, models  # the walk reached the nested sections
    missing = sorted(
        f"{m.__module__}.{m.__name__}.{name}"
        for m in models
        for name, field in m.model_fields.items()
        if not (field.description or "").strip()
    )
    assert missing == [], "settings without Field(description=...): " + ", ".join(missing)


def _secret_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    found = set()
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        args = typing.get_args(field.annotation) or (field.annotation,)
        flat = [typing.get_args(a)[0] if typing.get_args(a) else a for a in args]
        if any(isinstance(a, type) and issubclass(a, SecretStr) for a in flat):
            found.add(path)
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            found |= _secret_paths(field.annotation, path)
    return found


def test_the_secrets_the_reference_marks_env_only_are_the_ones_the_file_refuses() -> None:
    assert _secret_paths(Settings) == SECRET_FIELDS
    rendered = render(PAGES[0])
    for path in SECRET_FIELDS:
        env = "UPTAKE_" + "__".join(path).upper()
        assert f"`{env}` (env only)" in rendered


@pytest.mark.parametrize("p", PAGES, ids=lambda p: p.name)
def test_the_committed_reference_is_the_generated_one(p: ReferencePage) -> None:
    committed = committed_block((ROOT / p.doc).read_text(encoding="utf-8"), p.marker)
    assert committed is not None, f"{p.doc}: no <!-- {p.marker}:start/end --> markers"
    assert committed == render(p), f"{p.doc} is out of date with the models: run `{REGENERATE}`"


def test_every_env_name_in_the_reference_is_read_by_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The name printed is the one pydantic-settings reads, at the key path printed."""
    for var in [v for v in os.environ if v.startswith("UPTAKE_")]:
        monkeypatch.delenv(var)
    rows = [r for t in reference_tables(Settings, "UPTAKE_") for r in t.rows if r.env]
    assert len(rows) > 100
    for row in rows:
        name = row.env.split(" ")[0]
        monkeypatch.setenv(name, '"probe"')
        node = EnvSettingsSource(Settings)()
        for part in row.key.split("."):
            assert isinstance(node, dict) and part in node, f"{name} is not read as {row.key}"
            node = node[part]
        monkeypatch.delenv(name)


def test_a_rendered_row_says_key_type_default_env_and_meaning() -> None:
    rendered = render(PAGES[0])
    assert (
        "| `kafka.embedded_port` | int (≥ 1, ≤ 65535) | `9092` | `UPTAKE_KAFKA__EMBEDDED_PORT` "
        "| Port of the embedded broker `uptake up` starts. |"
    ) in rendered
    assert "| `sources[].authors` | list of str | `[]` |  |" in rendered  # in UPTAKE_SOURCES
    assert "### `sources[]` (kind: dir)" in rendered
    assert "`UPTAKE_TRACKS` (JSON)" in rendered


def test_config_reference_prints_a_page_and_writes_every_page(tmp_path: Path) -> None:
    printed = run_uptake("config", "reference", "--page", "recipe", home=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == render(PAGES[1])

    root = tmp_path / "repo"
    for p in PAGES:
        (root / p.doc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / p.doc, root / p.doc)
    stale = root / PAGES[0].doc
    stale.write_text(stale.read_text().replace("Port of the embedded broker", "stale help"))
    wrote = run_uptake("config", "reference", "--write", "--root", str(root), home=tmp_path)
    assert wrote.returncode == 0, wrote.stderr
    assert (
        f"{stale}: updated" in wrote.stdout and f"{root / PAGES[1].doc}: up to date" in wrote.stdout
    )
    assert stale.read_text() == (ROOT / PAGES[0].doc).read_text()


def test_write_without_markers_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for p in PAGES:
        (tmp_path / p.doc).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p.doc).write_text("# no markers here\n")
    result = run_uptake("config", "reference", "--write", "--root", str(tmp_path), home=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {tmp_path / PAGES[0].doc}: markers <!-- settings-reference:start --> ... "
        "<!-- settings-reference:end --> not found"
    )
    unknown = run_uptake("config", "reference", "--page", "nope", home=tmp_path)
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "error: no reference page 'nope' (one of: settings, recipe)"

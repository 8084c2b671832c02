"""The settings reference, generated from the config models (docs/configuration.md).

A setting's help is written once, in its ``Field(description=...)``, as TRL writes its
configs' ``metadata={"help": ...}``. This module renders the models as markdown tables (key
path, type, default, environment variable, description), ``uptake config reference`` prints
them, ``--write`` puts them between the markers of each page in ``PAGES``, and a test fails
when a committed page differs from what the models say.

A page names its root model as ``"module:Class"`` and it is imported by that name, as
``uptake.services`` names the service packages: the training recipe lives in ``pipeline/``,
which the core does not import.
"""

from __future__ import annotations

import importlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic.fields import FieldInfo

from uptake.errors import InputError

_SECTION = "section"
_BELOW = "(below)"  # the default of a section: the defaults of its settings
_REQUIRED = "required"


class ReferencePage(BaseModel):
    """One generated reference: which model, which page, between which markers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="What `uptake config reference --page` names it by.")
    doc: Path = Field(description="The page, relative to the repository root.")
    model: str = Field(
        pattern=r"^[a-z_][a-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$",
        description="The root model as `module:Class`.",
    )
    env_prefix: str | None = Field(description="Prefix of its env variables; null: none.")
    marker: str = Field(description="`<!-- <marker>:start -->` ... `<!-- <marker>:end -->`.")

    def root(self) -> type[BaseModel]:
        module, _, name = self.model.partition(":")
        model = getattr(importlib.import_module(module), name)
        assert isinstance(model, type) and issubclass(model, BaseModel), self.model
        return model


PAGES: tuple[ReferencePage, ...] = (
    ReferencePage(
        name="settings",
        doc=Path("docs/configuration.md"),
        model="uptake.settings:Settings",
        env_prefix="UPTAKE_",
        marker="settings-reference",
    ),
    ReferencePage(
        name="recipe",
        doc=Path("docs/training.md"),
        model="pipeline.train.recipe:Recipe",
        env_prefix=None,
        marker="recipe-reference",
    ),
)


class Row(BaseModel):
    """One setting as the reference lists it."""

    key: str
    type: str
    default: str
    env: str
    description: str


class Table(BaseModel):
    """The settings of one section (or of one kind of a list or map entry)."""

    title: str
    intro: str = ""
    rows: list[Row] = Field(default_factory=list)


def page(name: str) -> ReferencePage:
    """The page called ``name``; InputError (exit 2) naming the others when there is none."""
    for p in PAGES:
        if p.name == name:
            return p
    raise InputError(f"no reference page {name!r} (one of: {', '.join(p.name for p in PAGES)})")


def render(p: ReferencePage) -> str:
    """The generated markdown of one page, as it stands between its markers."""
    tables = reference_tables(p.root(), p.env_prefix)
    lines = [
        "<!-- Generated from the models' Field(description=...) by "
        "`uptake config reference --write`; edit those, not this block. -->",
    ]
    for table in tables:
        lines += ["", f"### {table.title}", ""]
        if table.intro:
            lines += [table.intro, ""]
        lines += _markdown_table(table.rows, with_env=p.env_prefix is not None)
    return "\n".join(lines) + "\n"


def replace_block(text: str, marker: str, body: str, where: str) -> str:
    """``text`` with the part between the markers replaced by ``body``."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    head, sep, rest = text.partition(start)
    _, sep2, tail = rest.partition(end)
    if not sep or not sep2:
        raise InputError(f"{where}: markers {start} ... {end} not found")
    return f"{head}{start}\n{body}{end}{tail}"


def committed_block(text: str, marker: str) -> str | None:
    """What stands between the markers in ``text`` now (None: no markers)."""
    match = re.search(
        rf"<!-- {re.escape(marker)}:start -->\n(.*?)<!-- {re.escape(marker)}:end -->", text, re.S
    )
    return match.group(1) if match else None


# --- walking the models ---------------------------------------------------------------------


def reference_tables(root: type[BaseModel], env_prefix: str | None) -> list[Table]:
    """One table for the root's plain settings, then one per section (and per entry kind)."""
    top = Table(title="Top level")
    tables = [top]
    for name, field in root.model_fields.items():
        if _shape(field.annotation)[1]:
            tables += _tables(name, field, env_prefix)
        else:
            top.rows.append(_row(name, field, env_prefix))
    return [t for t in tables if t.rows]


def _tables(key: str, field: FieldInfo, env_prefix: str | None) -> list[Table]:
    table = Table(title=f"`{key}`")
    more = _walk(key, field, env_prefix, table)
    return [table, *more]


def _walk(key: str, field: FieldInfo, env_prefix: str | None, table: Table) -> list[Table]:
    """Add ``key`` and what it holds to ``table``; return the tables of its entry kinds."""
    table.rows.append(_row(key, field, env_prefix))
    container, models = _shape(field.annotation)
    if not models:
        return []
    inner = _entry_key(key, field.annotation)
    env = env_prefix if container is None else None  # entries are set as JSON, as a whole
    if len(models) == 1:
        return _walk_model(inner, models[0], env, table)
    more: list[Table] = []
    for model in models:  # a tagged union: one table per kind, its tag first
        tag, value = _tag(model)
        kind = Table(title=f"`{inner}` ({tag}: {value})", intro=_first_line(model.__doc__))
        more += [kind, *_walk_model(inner, model, env, kind, first=tag)]
    return more


def _walk_model(
    prefix: str, model: type[BaseModel], env_prefix: str | None, table: Table, first: str = ""
) -> list[Table]:
    more: list[Table] = []
    fields = sorted(model.model_fields.items(), key=lambda item: item[0] != first)
    for name, field in fields:
        more += _walk(f"{prefix}.{name}", field, env_prefix, table)
    return more


def _shape(annotation: Any) -> tuple[str | None, list[type[BaseModel]]]:
    """``(container, models)``: the models a field holds, directly (container None) or as the
    entries of a list (``"[]"``) or map (``".<name>"``)."""
    annotation = _strip(annotation)
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        models = _models(args[0]) if args else []
        return ("[]" if models else None), models
    if origin is dict:
        key, value = typing.get_args(annotation)
        models = _models(value)
        placeholder = "<key>" if typing.get_origin(_strip(key)) is Literal else "<name>"
        return (f".{placeholder}" if models else None), models
    return None, _models(annotation)


def _models(annotation: Any) -> list[type[BaseModel]]:
    annotation = _strip(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if _is_union(annotation):
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    return []


def _entry_key(key: str, annotation: Any) -> str:
    container, _ = _shape(annotation)
    return key + (container or "")


def _tag(model: type[BaseModel]) -> tuple[str, str]:
    """``("kind", "hf")``: the field and value a member of a tagged union is chosen by."""
    for name, field in model.model_fields.items():
        values = typing.get_args(field.annotation) if _is_literal(field.annotation) else ()
        if len(values) == 1:
            return name, str(values[0])
    raise TypeError(f"{model.__name__} has no single-value Literal field to be told apart by")


# --- one row --------------------------------------------------------------------------------


def _row(key: str, field: FieldInfo, env_prefix: str | None) -> Row:
    secret = _is_secret(field.annotation)
    env = ""
    if env_prefix is not None:
        env = env_prefix + key.replace(".", "__").upper()
        container, models = _shape(field.annotation)
        if secret:
            env += " (env only)"
        elif models and container is None:
            env = ""  # a section: its settings are listed one by one
        elif _is_structured(field.annotation):
            env += " (JSON)"
    return Row(
        key=key,
        type=_type_text(field.annotation) + _bounds(field),
        default=_default_text(field),
        env=env,
        description=field.description or "",
    )


def _type_text(annotation: Any) -> str:
    annotation = _strip(annotation)
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if _is_union(annotation):
        parts = [_type_text(arg) for arg in typing.get_args(annotation)]
        if all(p == _SECTION for p in parts if p != "null"):  # a tagged union of sections
            parts = list(dict.fromkeys(parts))
        return " | ".join(parts)
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(_literal(v) for v in typing.get_args(annotation))
    if origin in (list, tuple, set, frozenset):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return f"list of {_grouped(_type_text(args[0])) if args else 'any'}"
    if origin is dict:
        return f"map of {_grouped(_type_text(typing.get_args(annotation)[1]))}"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return _SECTION
        if issubclass(annotation, SecretStr):
            return "secret"
        if issubclass(annotation, Path):
            return "path"
        return annotation.__name__
    return "any"


def _grouped(text: str) -> str:
    return f"({text})" if " | " in text else text


def _bounds(field: FieldInfo) -> str:
    parts = []
    for meta in field.metadata:
        if isinstance(meta, Ge):
            parts.append(f"≥ {_number(meta.ge)}")
        elif isinstance(meta, Gt):
            parts.append(f"> {_number(meta.gt)}")
        elif isinstance(meta, Le):
            parts.append(f"≤ {_number(meta.le)}")
        elif isinstance(meta, Lt):
            parts.append(f"< {_number(meta.lt)}")
    return f" ({', '.join(parts)})" if parts else ""


def _default_text(field: FieldInfo) -> str:
    if field.is_required():
        return _REQUIRED
    value = field.get_default(call_default_factory=True, validated_data={})
    if isinstance(value, BaseModel):
        return _BELOW
    if isinstance(value, dict) and any(isinstance(v, BaseModel) for v in value.values()):
        return "{" + ", ".join(f"{k}: {{…}}" for k in value) + "}"
    return _json_text(value)


def _json_text(value: Any) -> str:
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value)


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _literal(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def _is_secret(annotation: Any) -> bool:
    annotation = _strip(annotation)
    if _is_union(annotation):
        return any(_is_secret(a) for a in typing.get_args(annotation))
    return isinstance(annotation, type) and issubclass(annotation, SecretStr)


def _is_structured(annotation: Any) -> bool:
    annotation = _strip(annotation)
    if _is_union(annotation):
        return any(_is_structured(a) for a in typing.get_args(annotation))
    return typing.get_origin(annotation) in (list, tuple, set, frozenset, dict)


def _strip(annotation: Any) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _is_literal(annotation: Any) -> bool:
    return typing.get_origin(annotation) is Literal


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _first_line(doc: str | None) -> str:
    text = (doc or "").strip().split("\n\n")[0]
    return " ".join(text.split()).replace("``", "`")


# --- markdown -------------------------------------------------------------------------------


def _markdown_table(rows: list[Row], *, with_env: bool) -> list[str]:
    heads = ["key", "type", "default", *(["env"] if with_env else []), "description"]
    lines = ["| " + " | ".join(heads) + " |", "|" + " --- |" * len(heads)]
    for r in rows:
        default = r.default if r.default in (_BELOW, _REQUIRED) else _code(r.default)
        cells = [_code(r.key), _cell(r.type), default]
        if with_env:
            cells.append(_env_cell(r.env))
        cells.append(_cell(r.description))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _env_cell(env: str) -> str:
    if not env:
        return ""
    name, _, note = env.partition(" ")
    return _code(name) + (f" {note}" if note else "")


def _code(text: str) -> str:
    if not text:
        return ""
    fence = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{_cell(text)}{pad}{fence}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")

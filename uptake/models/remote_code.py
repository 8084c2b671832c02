"""The remote-code decision, made from a model directory's files before any of its code runs.

A config (or tokenizer config) with an ``auto_map`` asks transformers to import Python shipped
with the model. uptake runs that code only for allow-listed sources, and not even then when
transformers implements the config's ``model_type`` natively: with ``trust_remote_code=False``
transformers 5 loads its own class for a known ``model_type`` and ignores the repo's code.

Code is often split over files (``configuration_x.py`` + ``modeling_x.py`` with a relative
import). Saving a model keeps only some of them, so ``copy_code_files`` copies every file the
``auto_map`` needs, relative imports resolved, into checkpoints and exports. A code file that
is a link leading out of the model directory is refused: its target is not part of the model.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from uptake.errors import InputError
from uptake.mlflow_contract import BASE_MODEL_TAG, RELEASE_ID_TAG
from uptake.models.files import read_json

AUTO_MAP_FILES = ("config.json", "tokenizer_config.json", "processor_config.json")


class RemoteCodeDecision(BaseModel):
    """``action``: ``none`` (no custom code), ``ignored`` (native class used instead),
    ``trusted`` (allow-listed: its code runs) or ``refused`` (``reason`` says why)."""

    action: Literal["none", "ignored", "trusted", "refused"] = "none"
    findings: list[str] = Field(default_factory=list)
    reason: str = ""
    code_files: list[str] = Field(default_factory=list)

    @property
    def trust_remote_code(self) -> bool:
        return self.action == "trusted"

    @property
    def refused(self) -> bool:
        return self.action == "refused"


def custom_code_findings(model_dir: Path) -> list[str]:
    """Where the model asks for its own Python code (``auto_map`` entries)."""
    findings = []
    for name in AUTO_MAP_FILES:
        auto_map = read_json(model_dir / name).get("auto_map")
        if auto_map:
            entries = auto_map.items() if isinstance(auto_map, dict) else [("", auto_map)]
            shown = ", ".join(f"{k} -> {v}" for k, v in entries)
            findings.append(f"{name} auto_map ({shown})")
    return findings


class ModelOrigin(BaseModel):
    """Where a model came from, as the allow-list rule reads it: the configured source's name
    and kind and the repo id (``org/name``) there. None fields are unknown."""

    model_config = ConfigDict(frozen=True)

    source: str | None = None
    kind: Literal["hf", "dir"] | None = None
    repo_id: str | None = None


def origin_of_tags(tags: Mapping[str, str], kinds: Mapping[str, str]) -> ModelOrigin:
    """A registered version's origin from its tags: the release id ``{source}:{repo}@{rev}``
    names the source and repo (the base-model tag the repo when there is no release id);
    ``kinds`` maps configured source names to their kind (a source not configured: unknown)."""
    release = tags.get(RELEASE_ID_TAG) or ""
    source, sep, rest = release.partition(":")
    if not sep or not source:
        return ModelOrigin(repo_id=tags.get(BASE_MODEL_TAG) or None)
    repo = rest.rpartition("@")[0] or tags.get(BASE_MODEL_TAG) or None
    kind = kinds.get(source)
    return ModelOrigin(source=source, kind=kind if kind in ("hf", "dir") else None, repo_id=repo)


_SCOPED = re.compile(r"^(?P<source>[A-Za-z0-9][A-Za-z0-9_.-]*):(?P<pattern>.+)$")


def _is_path_entry(entry: str) -> bool:
    return entry.startswith("/")


def scope_allowlist(allowlist: Iterable[str], source: str | None, kind: str | None) -> list[str]:
    """The entries that apply to models of ``source`` (of ``kind``), as plain repo-id patterns.

    ``hub:org/*`` applies to the source named ``hub`` only; a bare ``org/*`` to hub (``hf``)
    sources only, so a drop folder ``drops/org/x`` never borrows a hub org's trust; absolute
    paths apply to any model directory. With no source known (``uptake train --repo-id``: a
    hub repo id by the caller's word) the bare entries and paths apply. Scoping twice changes
    nothing only for hub sources: scope once, where the source is known (the worker's spec)."""
    scoped: list[str] = []
    for entry in allowlist:
        match = None if _is_path_entry(entry) else _SCOPED.match(entry)
        if match is not None:
            if source is not None and match["source"] == source:
                scoped.append(match["pattern"])
        elif _is_path_entry(entry) or source is None or kind == "hf":
            scoped.append(entry)
    return scoped


def is_allowlisted(
    allowlist: Iterable[str],
    repo_id: str | None,
    model_dir: Path,
    origin: ModelOrigin | None = None,
) -> bool:
    """Whether ``allowlist`` (``trust_remote_code_allowlist``) trusts this model's code.

    Entries: ``source:org/*`` (a repo-id pattern for one source), a bare ``org/*`` (hub
    sources only, see ``scope_allowlist``) or an absolute path pattern (the model directory).
    Shell-style patterns. A directory's bare name is never matched: any folder could be named
    like an allow-listed repo, and trusting it would run whatever code it holds."""
    if origin is not None:
        allowlist = scope_allowlist(allowlist, origin.source, origin.kind)
        repo_id = origin.repo_id or repo_id
    else:
        allowlist = scope_allowlist(allowlist, None, None)
    path = str(model_dir.resolve())
    for pattern in allowlist:
        if _is_path_entry(pattern):
            if fnmatch.fnmatchcase(path, pattern):
                return True
        elif repo_id and fnmatch.fnmatchcase(repo_id, pattern):
            return True
    return False


def native_model_type(model_dir: Path) -> bool:
    """Whether transformers implements the config's ``model_type`` itself."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return read_json(model_dir / "config.json").get("model_type") in CONFIG_MAPPING


def _auto_map_modules(model_dir: Path) -> list[str]:
    """Module names the ``auto_map`` entries point at, in this directory (``mod.Class``).

    References into another repo (``org/repo--mod.Class``) name no local file and are skipped.
    """
    modules: list[str] = []
    for name in AUTO_MAP_FILES:
        auto_map = read_json(model_dir / name).get("auto_map")
        values = auto_map.values() if isinstance(auto_map, dict) else [auto_map]
        for value in values:
            for ref in value if isinstance(value, list | tuple) else [value]:
                if isinstance(ref, str) and "--" not in ref and "." in ref:
                    modules.append(ref.split(".")[0])
    return list(dict.fromkeys(modules))


def _inside(model_dir: Path, path: Path) -> str | None:
    """Why ``path`` is not a code file of ``model_dir`` (missing, or a link leading out)."""
    if not path.is_file():
        return f"code file {path.name} is missing"
    root = model_dir.resolve()
    target = path.resolve()
    if not target.is_relative_to(root):
        return f"code file {path.name} is a link to {target}, outside the model directory"
    return None


def code_files(model_dir: Path) -> list[str]:
    """Every Python file the ``auto_map`` needs, relative imports followed (names, sorted).

    Raises InputError when one is missing or is a link leading out of ``model_dir``.
    """
    from transformers.dynamic_module_utils import get_relative_import_files

    needed: set[str] = set()
    for module in _auto_map_modules(model_dir):
        path = model_dir / f"{module}.py"
        problem = _inside(model_dir, path)
        if problem is not None:
            raise InputError(f"{model_dir}: {problem}")
        needed.add(path.name)
        for extra in get_relative_import_files(str(path)):
            extra_path = Path(extra)
            problem = _inside(model_dir, extra_path)
            if problem is not None:
                raise InputError(f"{model_dir}: {problem} (imported by {path.name})")
            needed.add(extra_path.name)
    return sorted(needed)


def copy_code_files(src: Path, dst: Path) -> list[str]:
    """Copy the code ``src``'s ``auto_map`` needs into ``dst`` (overwriting); the names copied.

    A saved checkpoint keeps the configuration file transformers imported but not the modeling
    file, so a reload from it fails; a copy of every needed file makes ``dst`` loadable.
    """
    names = code_files(src)
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile((src / name).resolve(), dst / name)
    return names


def decide_remote_code(
    model_dir: Path,
    allowlist: Iterable[str] = (),
    repo_id: str | None = None,
    origin: ModelOrigin | None = None,
) -> RemoteCodeDecision:
    """Run the model's own code or not, decided from its files (no code is imported here).

    ``origin`` (source, kind, repo id) scopes the allow-list (``is_allowlisted``); without it
    ``repo_id`` is taken as a hub repo id, as the worker's spec and ``--repo-id`` give it."""
    findings = custom_code_findings(model_dir)
    if not findings:
        return RemoteCodeDecision()
    shown = "; ".join(findings)
    if native_model_type(model_dir):
        return RemoteCodeDecision(
            action="ignored",
            findings=findings,
            reason=f"{shown}, but transformers implements this architecture natively: loading "
            "the native class, not the repo's code",
        )
    if not is_allowlisted(allowlist, repo_id, model_dir, origin):
        if origin is not None and origin.repo_id:
            ident = f"{origin.source}:{origin.repo_id}" if origin.source else origin.repo_id
        else:
            ident = repo_id or str(model_dir.resolve())
        return RemoteCodeDecision(
            action="refused",
            findings=findings,
            reason=f"model requires its own Python code ({shown}) and {ident!r} is not in "
            "trust_remote_code_allowlist (entries are scoped to a source: `hub:org/*`; a bare "
            "`org/*` trusts hub sources only); uptake never runs a model's code unless its "
            "source is allow-listed",
        )
    try:
        files = code_files(model_dir)
    except InputError as exc:
        return RemoteCodeDecision(
            action="refused",
            findings=findings,
            reason=f"allow-listed, but its code cannot be used: {exc}",
        )
    return RemoteCodeDecision(
        action="trusted",
        findings=findings,
        reason=f"trusting remote code (allow-listed): {shown}",
        code_files=files,
    )

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
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from uptake.errors import InputError
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


def is_allowlisted(allowlist: Iterable[str], repo_id: str | None, model_dir: Path) -> bool:
    """Allow-list entries are repo ids or absolute paths, shell-style patterns allowed
    (``org/*``). A directory's bare name is not matched: any folder could be named like an
    allow-listed repo, and trusting it would run whatever code it holds."""
    candidates = [c for c in (repo_id, str(model_dir.resolve())) if c]
    return any(fnmatch.fnmatchcase(c, pattern) for pattern in allowlist for c in candidates)


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
    model_dir: Path, allowlist: Iterable[str] = (), repo_id: str | None = None
) -> RemoteCodeDecision:
    """Run the model's own code or not, decided from its files (no code is imported here)."""
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
    if not is_allowlisted(allowlist, repo_id, model_dir):
        ident = repo_id or str(model_dir.resolve())
        return RemoteCodeDecision(
            action="refused",
            findings=findings,
            reason=f"model requires its own Python code ({shown}) and {ident!r} is not in "
            "trust_remote_code_allowlist; uptake never runs a model's code unless its source "
            "is allow-listed",
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

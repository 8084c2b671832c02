"""The ``dir`` source: a shared mount where models are dropped as ``<org>/<name>/``.

A folder's revision is the SHA-256 of its files' contents (names included). Hashing a large
model takes a while, so each scan first takes a cheap fingerprint (names, sizes, mtimes):
the content hash is computed only for a folder whose fingerprint is new to the store and has
not changed since the previous scan. A folder still being written (fingerprint changing
between two scans, or a ``*.incomplete``/``*.part``/``*.tmp`` file present) is not a release yet.

Each folder is judged alone, so one bad drop never blocks the others:

- a ``config.json``, README front matter or safetensors header that cannot be understood makes
  the folder a skip with reason ``malformed`` (revision: its content hash);
- a symbolic link whose target leaves the model folder (or a model folder that is itself a link
  out of the drop folder) makes the folder a skip with reason ``unsafe_link``: nothing behind
  the link is read or hashed, and the pipeline, which loads the folder, never follows it
  (revision: the folder's fingerprint). Links that stay inside the folder are fine;
- a folder that cannot be read right now (permissions, removed mid-scan) is left out of this
  poll with a warning and looked at again on the next one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from uptake.errors import InputError
from uptake.models.files import MalformedWeights, read_safetensors_header_params
from uptake.models.files import folder_content_hash as content_hash
from uptake.watcher_config import DirSourceConfig
from watcher.faults import SourceFault
from watcher.snapshot import RepoSnapshot
from watcher.store import KnownRepo

log = logging.getLogger(__name__)

IN_PROGRESS_SUFFIXES = (".incomplete", ".part", ".tmp", ".lock")
_CHUNK = 1 << 20
MAX_METADATA_BYTES = 16 << 20  # config.json / README.md read in full: bounded
# libyaml refuses deep nesting at once; the pure-Python loader takes seconds to overflow
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class MalformedModel(InputError):
    """A folder's metadata (config, card, safetensors header) cannot be understood."""


class ModelConfig(BaseModel):
    """The fields of ``config.json`` the watcher reads; anything else is passed over."""

    model_config = ConfigDict(extra="allow")

    architectures: list[str] | None = None
    model_type: str | None = None
    quantization_config: Any = None
    auto_map: Any = None


class ModelCard(BaseModel):
    """The README front-matter fields the watcher reads (the Hub's model-card metadata)."""

    model_config = ConfigDict(extra="allow")

    pipeline_tag: str | None = None
    library_name: str | None = None
    license: str | list[str] | None = None
    tags: list[str | int | float] = Field(default_factory=list)


def _reason(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(map(str, first["loc"])) or "value"
    return f"{where}: {first['msg']}"


@dataclass(frozen=True)
class _Folder:
    repo_id: str
    path: Path
    fingerprint: str
    files: tuple[str, ...]  # visible files, repo-relative posix paths
    newest_mtime: float
    oldest_mtime: float
    in_progress: bool
    unsafe: str | None = None  # why a link makes this folder unsafe to read


def _outside(link: Path, inside: Path) -> bool:
    """Whether ``link`` points (directly or through other links) out of ``inside``."""
    return not Path(os.path.realpath(link)).is_relative_to(inside)


def _escaping_folder(repo_id: str, path: Path, root: Path) -> _Folder:
    """A model folder that is a link out of the drop folder: judged without reading it."""
    target = os.path.realpath(path)
    digest = hashlib.sha256(f"link\0{target}".encode()).hexdigest()
    detail = f"{repo_id} is a link to {target}, outside {root}"
    return _Folder(repo_id, path, digest, (), 0.0, 0.0, False, unsafe=detail)


def _scan_folder(repo_id: str, path: Path) -> _Folder:
    digest = hashlib.sha256()
    files: list[str] = []
    newest, oldest, in_progress = 0.0, float("inf"), False
    unsafe: str | None = None
    real = Path(os.path.realpath(path))
    for item in sorted(path.rglob("*")):
        if item.is_symlink() and _outside(item, real):
            rel = item.relative_to(path).as_posix()
            digest.update(f"{rel}\0->{os.readlink(item)}\n".encode())
            unsafe = unsafe or f"{rel} links to {os.path.realpath(item)}, outside the folder"
            continue  # never stat, read or hash what lies behind it
        if not item.is_file():
            continue
        rel = item.relative_to(path).as_posix()
        st = item.stat()
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        newest, oldest = max(newest, st.st_mtime), min(oldest, st.st_mtime)
        if item.name.endswith(IN_PROGRESS_SUFFIXES):
            in_progress = True
        if not any(part.startswith(".") for part in item.relative_to(path).parts):
            files.append(rel)
    return _Folder(
        repo_id,
        path,
        digest.hexdigest(),
        tuple(files),
        newest,
        oldest if files else newest,
        in_progress,
        unsafe,
    )


def _read_bounded(path: Path, limit: int) -> bytes:
    with path.open("rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise MalformedModel(f"{path.name} is larger than {limit:,} bytes")
    return data


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except RecursionError:
        raise MalformedModel(f"{what}: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int-string limit
        raise MalformedModel(f"{what}: not valid JSON ({exc})") from None


def safetensors_parameters(path: Path) -> int:
    """Parameter count from a safetensors header, without the weights (the one reader in
    ``uptake.models.files``).

    Raises ``MalformedModel`` for a header that is not one (truncated, over
    ``uptake.models.files.MAX_HEADER_BYTES``, not a JSON object of tensors with integer
    shapes); ``OSError`` when the file cannot be read.
    """
    try:
        return read_safetensors_header_params(path)
    except MalformedWeights as exc:
        raise MalformedModel(str(exc)) from None


def read_config(path: Path) -> ModelConfig:
    """``config.json`` as far as the watcher reads it, or ``MalformedModel`` saying why."""
    loaded = _json(_read_bounded(path, MAX_METADATA_BYTES), "config.json")
    if not isinstance(loaded, dict):
        raise MalformedModel("config.json is not a JSON object")
    try:
        return ModelConfig.model_validate(loaded)
    except ValidationError as exc:
        raise MalformedModel(f"config.json: {_reason(exc)}") from None


def read_card(readme: Path) -> ModelCard:
    """The README's YAML front matter; none at all is an empty card."""
    try:
        text = _read_bounded(readme, MAX_METADATA_BYTES).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedModel("README.md is not UTF-8") from None
    if not text.startswith("---"):
        return ModelCard()
    block = text[3:].split("\n---", 1)[0]
    try:
        data = yaml.load(block, Loader=_YAML_LOADER)
    except (yaml.YAMLError, RecursionError) as exc:
        raise MalformedModel(f"README.md front matter: {str(exc)[:200]}") from None
    if data is None:
        return ModelCard()
    if not isinstance(data, dict):
        raise MalformedModel("README.md front matter is not a mapping")
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        raise MalformedModel(f"README.md front matter: {_reason(exc)}") from None
    except RecursionError:  # a YAML alias cycle (``&a [*a]``)
        raise MalformedModel("README.md front matter: nested too deeply") from None


def _mtime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class DirSource:
    def __init__(self, config: DirSourceConfig) -> None:
        self.config = config
        self.root = config.path.expanduser().resolve()
        self._previous: dict[str, str] = {}  # repo id -> fingerprint at the previous scan
        self._folders: dict[str, _Folder] = {}

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def endpoint(self) -> str:
        return str(self.root)

    @property
    def has_token(self) -> bool:
        return True  # nothing is gated in a directory

    def location(self, repo_id: str) -> str:
        return str(self.root / repo_id)

    def _folders_now(self) -> list[_Folder]:
        if not self.root.is_dir():
            raise SourceFault("unavailable", f"{self.root} is not a readable directory")
        try:
            orgs = sorted(p for p in self.root.iterdir() if p.is_dir())
        except OSError as exc:
            raise SourceFault("unavailable", f"scanning {self.root}: {exc}") from exc
        out = []
        for org in orgs:
            if org.name.startswith("."):
                continue
            try:
                models = sorted(p for p in org.iterdir() if p.is_dir())
            except OSError as exc:  # this org only: the others are still looked at
                log.warning("source %s: cannot list %s: %s", self.name, org, exc)
                continue
            for model in models:
                if model.name.startswith("."):
                    continue
                repo_id = f"{org.name}/{model.name}"
                if _outside(model, self.root):
                    out.append(_escaping_folder(repo_id, model, self.root))
                    continue
                try:
                    out.append(_scan_folder(repo_id, model))
                except OSError as exc:
                    log.warning("source %s: cannot scan %s: %s", self.name, repo_id, exc)
        return out

    def scope(self) -> list[str]:
        return [str(self.root)]

    def scope_of(self, snap: RepoSnapshot) -> str:
        return str(self.root)

    def scan(
        self, known: Mapping[str, KnownRepo] | None, fresh: frozenset[str] = frozenset()
    ) -> list[RepoSnapshot]:
        if fresh:
            known = None  # another directory: everything in it is baseline
        now = time.time()
        folders = self._folders_now()
        out: list[RepoSnapshot] = []
        for folder in folders:
            row = known.get(folder.repo_id) if known is not None else None
            if row is not None and row.fingerprint == folder.fingerprint:
                out.append(  # unchanged since it was recorded: no need to hash it again
                    RepoSnapshot(
                        repo_id=folder.repo_id, revision=row.revision, fingerprint=row.fingerprint
                    )
                )
                continue
            if folder.in_progress:
                continue
            if known is None:
                if now - folder.newest_mtime < self.config.interval_s:
                    continue  # written to just now: a release once it settles, not baseline
            elif self._previous.get(folder.repo_id) != folder.fingerprint:
                log.debug("source %s: %s is new or changing", self.name, folder.repo_id)
                continue
            snap = self._judged(folder)
            if snap is not None:
                out.append(snap)
        self._previous = {f.repo_id: f.fingerprint for f in folders}
        self._folders = {f.repo_id: f for f in folders}
        return out

    def _judged(self, folder: _Folder) -> RepoSnapshot | None:
        """The folder's snapshot, a refusal, or None when it cannot be read right now."""
        try:
            return self._snapshot(folder)
        except OSError as exc:
            log.warning("source %s: %s left for the next poll: %s", self.name, folder.repo_id, exc)
            return None

    def _refused(self, folder: _Folder, revision: str, reason: str, detail: str) -> RepoSnapshot:
        log.warning("source %s: %s refused (%s): %s", self.name, folder.repo_id, reason, detail)
        return RepoSnapshot(
            repo_id=folder.repo_id,
            revision=revision,
            created_at=_mtime(folder.oldest_mtime),
            last_modified=_mtime(folder.newest_mtime),
            files=folder.files,
            fingerprint=folder.fingerprint,
            detailed=True,
            refusal=reason,
            refusal_detail=detail,
        )

    def _snapshot(self, folder: _Folder) -> RepoSnapshot:
        """Raises ``OSError`` when a file cannot be read; a bad folder is a refusal."""
        if folder.unsafe is not None:
            return self._refused(folder, folder.fingerprint, "unsafe_link", folder.unsafe)
        revision = content_hash(folder.path, folder.files)
        try:
            config = (
                read_config(folder.path / "config.json")
                if "config.json" in folder.files
                else ModelConfig()
            )
            card = read_card(folder.path / "README.md") if "README.md" in folder.files else None
            card = card or ModelCard()
            params: int | None = None
            shards = [f for f in folder.files if f.endswith(".safetensors")]
            if shards:
                params = sum(safetensors_parameters(folder.path / f) for f in shards)
        except MalformedModel as exc:
            return self._refused(folder, revision, "malformed", str(exc))
        architectures = config.architectures or []
        pipeline_tag = card.pipeline_tag or (
            "text-generation" if any(a.endswith("ForCausalLM") for a in architectures) else None
        )
        library = card.library_name or (
            "transformers" if config.model_type or architectures else None
        )
        license_ = card.license
        if isinstance(license_, list):
            license_ = license_[0] if license_ else None
        return RepoSnapshot(
            repo_id=folder.repo_id,
            revision=revision,
            created_at=_mtime(folder.oldest_mtime),
            last_modified=_mtime(folder.newest_mtime),
            pipeline_tag=pipeline_tag,
            library=library,
            tags=tuple(str(t) for t in card.tags),
            license=license_ or None,
            num_parameters=params,
            quantized=bool(config.quantization_config),
            requires_remote_code=bool(config.auto_map),
            files=folder.files,
            fingerprint=folder.fingerprint,
            detailed=True,
        )

    def details(self, snap: RepoSnapshot) -> RepoSnapshot | None:
        if snap.detailed:
            return snap
        folder = self._folders.get(snap.repo_id)
        if folder is None:
            return None
        try:
            return self._snapshot(folder)
        except OSError as exc:
            raise SourceFault("unavailable", f"reading {folder.path}: {exc}") from exc

    def lookup(self, repo_id: str) -> RepoSnapshot | None:
        return None

    def watches(self, repo_id: str) -> bool:
        return False

    def close(self) -> None:
        pass

"""The ``dir`` source: a shared mount where models are dropped as ``<org>/<name>/``.

A folder's revision is the SHA-256 of its files' contents (names included). Hashing a large
model takes a while, so each scan first takes a cheap fingerprint (names, sizes, mtimes):
the content hash is computed only for a folder whose fingerprint is new to the store and has
not changed since the previous scan. A folder still being written (fingerprint changing
between two scans, or a ``*.incomplete``/``*.part``/``*.tmp`` file present) is not a release yet.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from uptake.watcher_config import DirSourceConfig
from watcher.faults import SourceFault
from watcher.snapshot import RepoSnapshot
from watcher.store import KnownRepo

log = logging.getLogger(__name__)

IN_PROGRESS_SUFFIXES = (".incomplete", ".part", ".tmp", ".lock")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class _Folder:
    repo_id: str
    path: Path
    fingerprint: str
    files: tuple[str, ...]  # visible files, repo-relative posix paths
    newest_mtime: float
    oldest_mtime: float
    in_progress: bool


def _scan_folder(repo_id: str, path: Path) -> _Folder:
    digest = hashlib.sha256()
    files: list[str] = []
    newest, oldest, in_progress = 0.0, float("inf"), False
    for item in sorted(path.rglob("*")):
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
    )


def content_hash(path: Path, files: tuple[str, ...]) -> str:
    """SHA-256 over every visible file's name and bytes: the folder's revision."""
    outer = hashlib.sha256()
    for rel in files:
        inner = hashlib.sha256()
        with (path / rel).open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                inner.update(chunk)
        outer.update(f"{rel}\0{inner.hexdigest()}\n".encode())
    return outer.hexdigest()


def safetensors_parameters(path: Path) -> int | None:
    """Parameter count from a safetensors header (8-byte length + JSON), without the weights."""
    try:
        with path.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > 100_000_000:
                return None
            header = json.loads(fh.read(length))
    except (OSError, struct.error, ValueError):
        return None
    total = 0
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in tensor.get("shape", []):
            count *= int(dim)
        total += count
    return total


def _front_matter(readme: Path) -> dict[str, Any]:
    try:
        text = readme.read_text(encoding="utf-8")
    except OSError:
        return {}
    if not text.startswith("---"):
        return {}
    block = text[3:].split("\n---", 1)[0]
    try:
        data = yaml.safe_load(block)
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


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
        out = []
        try:
            for org in sorted(p for p in self.root.iterdir() if p.is_dir()):
                if org.name.startswith("."):
                    continue
                for model in sorted(p for p in org.iterdir() if p.is_dir()):
                    if not model.name.startswith("."):
                        out.append(_scan_folder(f"{org.name}/{model.name}", model))
        except OSError as exc:
            raise SourceFault("unavailable", f"scanning {self.root}: {exc}") from exc
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
                if now - folder.newest_mtime < self.config.interval:
                    continue  # written to just now: a release once it settles, not baseline
            elif self._previous.get(folder.repo_id) != folder.fingerprint:
                log.debug("source %s: %s is new or changing", self.name, folder.repo_id)
                continue
            out.append(self._snapshot(folder))
        self._previous = {f.repo_id: f.fingerprint for f in folders}
        self._folders = {f.repo_id: f for f in folders}
        return out

    def _snapshot(self, folder: _Folder) -> RepoSnapshot:
        try:
            revision = content_hash(folder.path, folder.files)
        except OSError as exc:
            raise SourceFault("unavailable", f"hashing {folder.path}: {exc}") from exc
        config: dict[str, Any] = {}
        if "config.json" in folder.files:
            try:
                loaded = json.loads((folder.path / "config.json").read_text(encoding="utf-8"))
                config = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                config = {}
        card = _front_matter(folder.path / "README.md")
        params: int | None = None
        shards = [f for f in folder.files if f.endswith(".safetensors")]
        if shards:
            counts = [safetensors_parameters(folder.path / f) for f in shards]
            params = None if any(c is None for c in counts) else sum(c or 0 for c in counts)
        architectures = config.get("architectures") or []
        pipeline_tag = card.get("pipeline_tag") or (
            "text-generation"
            if any(str(a).endswith("ForCausalLM") for a in architectures)
            else None
        )
        library = card.get("library_name") or (
            "transformers" if config.get("model_type") or architectures else None
        )
        license_ = card.get("license")
        tags = card.get("tags") if isinstance(card.get("tags"), list) else []
        return RepoSnapshot(
            repo_id=folder.repo_id,
            revision=revision,
            created_at=_mtime(folder.oldest_mtime),
            last_modified=_mtime(folder.newest_mtime),
            pipeline_tag=pipeline_tag,
            library=library,
            tags=tuple(str(t) for t in tags),
            license=str(license_) if license_ else None,
            num_parameters=params,
            quantized=bool(config.get("quantization_config")),
            requires_remote_code=bool(config.get("auto_map")),
            files=folder.files,
            fingerprint=folder.fingerprint,
            detailed=True,
        )

    def details(self, snap: RepoSnapshot) -> RepoSnapshot | None:
        if snap.detailed:
            return snap
        folder = self._folders.get(snap.repo_id)
        return self._snapshot(folder) if folder is not None else None

    def lookup(self, repo_id: str) -> RepoSnapshot | None:
        return None

    def watches(self, repo_id: str) -> bool:
        return False

    def close(self) -> None:
        pass

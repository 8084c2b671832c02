"""Where the champion is: the ``champion`` alias in MLflow, and a local copy of its files.

The alias is the truth (DESIGN.md "Serving"); events only say when to look. A version's files
are downloaded once into ``<state dir>/serving/<model>/<version>``: into a temporary folder
first and renamed when complete, so a download cut short is never mistaken for a model. The
download writes a manifest of its files (size and SHA-256, ``MANIFEST``); a cached copy is
checked against it before it is used again, so a copy truncated or changed on disk since is
found (``CorruptCopy``), and ``discard`` removes it for a fresh download.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from uptake.errors import DependencyError
from uptake.mlflow_contract import CHAMPION_ALIAS, SERVED_AT_TAG
from uptake.models.remote_code import ModelOrigin, origin_of_tags
from uptake.retention import apply, serving_removals

log = logging.getLogger(__name__)

MANIFEST = ".uptake-manifest.json"


class CorruptCopy(DependencyError):
    """A cached version's files differ from what its download wrote (a checksum failed)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(root: Path) -> None:
    entries = {
        str(p.relative_to(root)): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in _files(root)
    }
    (root / MANIFEST).write_text(json.dumps(entries, indent=1, sort_keys=True))


def verify_manifest(root: Path) -> None:
    """Raise ``CorruptCopy`` when the files under ``root`` are not the ones its manifest lists
    (a copy without a manifest, from before manifests, is not checked)."""
    try:
        entries = json.loads((root / MANIFEST).read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        raise CorruptCopy(f"{root}: unreadable manifest: {exc}") from None
    present = {str(p.relative_to(root)) for p in _files(root)}
    if present != set(entries):
        missing = sorted(set(entries) - present) or sorted(present - set(entries))
        raise CorruptCopy(f"{root}: files differ from the download ({missing[0]})")
    for name, entry in entries.items():
        path = root / name
        if path.stat().st_size != entry["size"] or _sha256(path) != entry["sha256"]:
            raise CorruptCopy(f"{root}: {name} differs from the download (checksum)")


class ChampionSource:
    """MLflow lookups for serving: resolve the alias, fetch a version, stamp it served."""

    def __init__(
        self, tracking_uri: str, cache_dir: Path, source_kinds: Mapping[str, str] | None = None
    ) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.cache_dir = cache_dir
        self.source_kinds = dict(source_kinds or {})  # configured source name -> hf / dir
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def champion(self, model: str) -> str | None:
        """The version the alias points at; None when the model or the alias does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(model, CHAMPION_ALIAS).version)
        except MlflowException as exc:
            if exc.error_code in (
                "RESOURCE_DOES_NOT_EXIST",
                "INVALID_PARAMETER_VALUE",
                "NOT_FOUND",
            ):
                return None
            raise DependencyError(
                f"MLflow: cannot resolve {model}@{CHAMPION_ALIAS}: {exc}"
            ) from None

    def model_dir(self, model: str, version: str) -> Path:
        return self.cache_dir / model / version

    def cached(self, model: str, version: str) -> Path | None:
        """The version's directory when a download of it is complete here, else None."""
        final = self.model_dir(model, version)
        return final if final.is_dir() else None

    def discard(self, model: str, version: str) -> None:
        """Remove the cached copy (the next ``download`` fetches it again)."""
        final = self.model_dir(model, version)
        if final.is_dir():
            trash = Path(tempfile.mkdtemp(prefix=f".{version}-discarded-", dir=final.parent))
            final.rename(trash / "model")  # out of the way at once, then removed
            shutil.rmtree(trash, ignore_errors=True)

    def download(self, model: str, version: str) -> Path:
        """The version's model directory, downloaded on first use."""
        import mlflow.artifacts

        final = self.model_dir(model, version)
        if final.is_dir():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        uri = self.client.get_model_version_download_uri(model, version)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=final.parent))
        try:
            got = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=uri, dst_path=str(tmp), tracking_uri=self.tracking_uri
                )
            )
            write_manifest(got)
            got.rename(final) if got != tmp else tmp.rename(final)
        except OSError:
            if not final.is_dir():  # another replica sharing the state dir won the race
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("downloaded %s v%s to %s", model, version, final)
        return final

    def origin(self, model: str, version: str) -> ModelOrigin:
        """The version's source and repo id, from its MLflow tags (the release id the worker
        set): what the remote-code allow-list is matched against, never the folder's path."""
        try:
            tags = self.client.get_model_version(model, version).tags or {}
        except Exception as exc:
            raise DependencyError(f"MLflow: cannot read {model}/{version}: {exc}") from None
        return origin_of_tags(tags, self.source_kinds)

    def prune(self, model: str, served: str, keep: int) -> int:
        """Delete cached versions of ``model`` past the ``keep`` newest, never ``served`` nor
        the champion (``uptake.retention``: dot-named downloads in progress are left alone);
        the bytes freed."""
        protected = {served}
        with contextlib.suppress(DependencyError):
            if (champion := self.champion(model)) is not None:
                protected.add(champion)
        return apply(serving_removals(self.cache_dir / model, keep, protected))

    def mark_served(self, model: str, version: str) -> None:
        """Set the version's ``uptake.served_at`` (the report's timeline) unless already set."""
        mv = self.client.get_model_version(model, version)
        if SERVED_AT_TAG in (mv.tags or {}):
            return
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        self.client.set_model_version_tag(model, version, SERVED_AT_TAG, stamp)

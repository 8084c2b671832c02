"""Where the champion is: the ``champion`` alias in MLflow, and a local copy of its files.

The alias is the truth (DESIGN.md "Serving"); events only say when to look. A version's files
are downloaded once into ``<state dir>/serving/<model>/<version>``: into a temporary folder
first and renamed when complete, so a download cut short is never mistaken for a model.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from uptake.errors import DependencyError
from uptake.mlflow_contract import CHAMPION_ALIAS, SERVED_AT_TAG

log = logging.getLogger(__name__)


class ChampionSource:
    """MLflow lookups for serving: resolve the alias, fetch a version, stamp it served."""

    def __init__(self, tracking_uri: str, cache_dir: Path) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.cache_dir = cache_dir
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
            got.rename(final) if got != tmp else tmp.rename(final)
        except OSError:
            if not final.is_dir():  # another replica sharing the state dir won the race
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("downloaded %s v%s to %s", model, version, final)
        return final

    def mark_served(self, model: str, version: str) -> None:
        """Set the version's ``uptake.served_at`` (the report's timeline) unless already set."""
        mv = self.client.get_model_version(model, version)
        if SERVED_AT_TAG in (mv.tags or {}):
            return
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        self.client.set_model_version_tag(model, version, SERVED_AT_TAG, stamp)

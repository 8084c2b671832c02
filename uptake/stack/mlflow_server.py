"""The MLflow tracking server of the local stack: SQLite under the state dir, webhooks on.

Registry webhooks (``model_version_tag.set`` is how a UI approval reaches the promoter) need
a Fernet key in the server's environment, and loopback ``http://`` targets must be allowed
explicitly; this module sets all three.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cryptography.fernet import Fernet

from uptake.stack.probes import mlflow_healthy
from uptake.stack.process import ManagedProcess

ENCRYPTION_KEY_ENV = "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"


def webhook_encryption_key(state_dir: Path) -> str:
    """The env's key if set, else one generated once and kept (mode 0600) in the state dir.

    It must stay stable: MLflow encrypts stored webhook secrets with it.
    """
    if key := os.environ.get(ENCRYPTION_KEY_ENV):
        return key
    path = state_dir / "mlflow" / "webhook-encryption.key"
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def default_backend_store(state_dir: Path) -> str:
    return f"sqlite:///{state_dir / 'mlflow' / 'mlflow.db'}"


def mlflow_server(
    state_dir: Path,
    port: int,
    *,
    host: str = "127.0.0.1",
    backend_store_uri: str | None = None,
    log_path: Path | None = None,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    app_name: str | None = None,
) -> ManagedProcess:
    """A ``mlflow server`` serving artifacts from ``state_dir/mlflow/artifacts``.

    ``app_name="basic-auth"`` runs MLflow's own login (docs/security.md); its ini comes from
    ``MLFLOW_AUTH_CONFIG_PATH`` in ``extra_env``."""
    root = state_dir / "mlflow"
    (root / "artifacts").mkdir(parents=True, exist_ok=True)
    uri = f"http://{host}:{port}"
    env = {
        ENCRYPTION_KEY_ENV: webhook_encryption_key(state_dir),
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        # A new webhook is seen by the server only when its per-event cache expires.
        "MLFLOW_WEBHOOK_CACHE_TTL": "10",
        **(extra_env or {}),
    }
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--backend-store-uri",
        backend_store_uri or default_backend_store(state_dir),
        "--artifacts-destination",
        str(root / "artifacts"),
        *(["--app-name", app_name] if app_name else []),
    ]
    return ManagedProcess(
        "mlflow",
        argv,
        log_path or state_dir / "logs" / "mlflow.log",
        env=env,
        healthy=lambda: mlflow_healthy(uri),
        address=uri,
    )

"""MLflow's basic-auth app, as compose.yaml runs it: a real ``mlflow server --app-name
basic-auth`` refuses an unauthenticated registry write, an approver with READ cannot move
``champion``, and the service account that ``uptake.stack.mlflow_auth`` creates (its
credentials only from the environment, as compose passes them) can."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.server.auth.client import AuthServiceClient

from uptake.stack.mlflow_auth import ensure_service_user
from uptake.stack.mlflow_server import mlflow_server
from uptake.stack.process import free_port

ADMIN = ("admin", "admin-password-for-tests")
SERVICE = ("uptake", "service-password-for-tests")
UNAUTHENTICATED = r"(?i)401|unauthori[sz]ed|credentials"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = tmp_path_factory.mktemp("mlflow-auth")
    ini = state / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{state / 'basic_auth.db'}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    proc = mlflow_server(
        state,
        free_port(),
        app_name="basic-auth",
        extra_env={
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
            "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "flask-secret-for-tests",
        },
    ).start()
    try:
        proc.wait_healthy(180)  # /health stays open: compose's healthcheck needs no login
        yield proc.address
    finally:
        proc.stop()


def _as(monkeypatch: pytest.MonkeyPatch, user: tuple[str, str] | None) -> None:
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    if user is not None:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user[1])


@pytest.mark.slow
def test_registry_writes_need_the_service_account_from_env(
    auth_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client = MlflowClient(tracking_uri=auth_server, registry_uri=auth_server)

    _as(monkeypatch, None)  # anyone who reaches the port
    with pytest.raises(MlflowException, match=UNAUTHENTICATED):
        client.create_registered_model("uptake-legal")

    _as(monkeypatch, ADMIN)
    assert ensure_service_user(auth_server, *SERVICE) == "created"
    assert ensure_service_user(auth_server, *SERVICE) == "updated"  # idempotent
    AuthServiceClient(auth_server).create_user("approver", "approver-password")  # not admin

    _as(monkeypatch, SERVICE)  # what each compose service gets from its environment
    client.create_registered_model("uptake-legal")
    version = client.create_model_version("uptake-legal", "s3://bucket/model")
    client.set_registered_model_alias("uptake-legal", "champion", version.version)
    assert client.get_model_version_by_alias("uptake-legal", "champion").version == "1"

    _as(monkeypatch, ("uptake", "wrong-password"))
    with pytest.raises(MlflowException, match=UNAUTHENTICATED):
        client.set_registered_model_alias("uptake-legal", "champion", version.version)

    # a person with only the default READ sees the model but can neither move champion nor
    # approve
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "approver")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "approver-password")
    assert client.get_registered_model("uptake-legal").name == "uptake-legal"
    with pytest.raises(MlflowException, match=r"(?i)403|permission"):
        client.set_registered_model_alias("uptake-legal", "champion", version.version)
    with pytest.raises(MlflowException, match=r"(?i)403|permission"):
        client.set_model_version_tag("uptake-legal", version.version, "approval", "approved")

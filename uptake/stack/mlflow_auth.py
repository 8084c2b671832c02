"""The service account of uptake on an MLflow server that runs MLflow's basic-auth app.

With ``mlflow server --app-name basic-auth`` every request but ``/health`` needs a user.
People (approvers) log in to the UI with their own accounts; uptake's services authenticate
with one service account, given to each through ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD``, which MLflow's client reads. The account is an MLflow admin
because MLflow lets only admins manage registry webhooks (the promoter creates its own).

``python -m uptake.stack.mlflow_auth`` (compose's ``mlflow-users`` job) creates or updates
that account, logged in as the bootstrap admin: ``MLFLOW_TRACKING_URI``,
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (the admin),
``MLFLOW_SERVICE_USERNAME`` / ``MLFLOW_SERVICE_PASSWORD`` (the account to create).
"""

from __future__ import annotations

import os
import sys

from uptake.errors import InputError


def ensure_service_user(tracking_uri: str, username: str, password: str) -> str:
    """Create ``username`` as an admin, or reset its password and admin flag; idempotent.

    Authenticates with the caller's ``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD`` (an admin).
    Returns "created" or "updated"."""
    from mlflow.exceptions import RestException
    from mlflow.server.auth.client import AuthServiceClient

    if not username or not password:
        raise InputError("the MLflow service account needs a username and a password")
    client = AuthServiceClient(tracking_uri)
    try:
        client.create_user(username, password)
        outcome = "created"
    except RestException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        client.update_user_password(username, password)
        outcome = "updated"
    client.update_user_admin(username, True)
    return outcome


def main() -> None:
    missing = [
        name
        for name in (
            "MLFLOW_TRACKING_URI",
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
            "MLFLOW_SERVICE_USERNAME",
            "MLFLOW_SERVICE_PASSWORD",
        )
        if not os.environ.get(name)
    ]
    if missing:
        sys.exit(f"error: set {', '.join(missing)}")
    user = os.environ["MLFLOW_SERVICE_USERNAME"]
    outcome = ensure_service_user(
        os.environ["MLFLOW_TRACKING_URI"], user, os.environ["MLFLOW_SERVICE_PASSWORD"]
    )
    print(f"MLflow service account {user}: {outcome}")


if __name__ == "__main__":
    main()

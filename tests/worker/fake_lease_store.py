"""An in-memory ``LeaseStore`` whose MLflow can be taken down: for the lease's pure tests."""

from __future__ import annotations

import threading

from mlflow.exceptions import MlflowException

from pipeline.worker.lease import LeaseState


class MemoryLeaseStore:
    """The lease tags of runs in a dict; ``down`` makes every call fail as a refused
    connection does through MLflow's client (a bare ``MlflowException``)."""

    def __init__(self) -> None:
        self.leases: dict[str, LeaseState] = {}
        self.down = threading.Event()
        self.calls = 0

    def _reach(self) -> None:
        self.calls += 1
        if self.down.is_set():
            import requests

            try:
                raise requests.ConnectionError("Max retries exceeded: connection refused")
            except requests.ConnectionError as exc:  # as mlflow.utils.rest_utils wraps it
                raise MlflowException(f"API request to mlflow failed with exception {exc}")  # noqa: B904

    def read(self, run_id: str) -> LeaseState:
        self._reach()
        return self.leases.get(run_id, LeaseState(None, 0.0, 0))

    def write(self, run_id: str, owner: str, expires: float, generation: int) -> None:
        self._reach()
        self.leases[run_id] = LeaseState(owner, expires, generation)

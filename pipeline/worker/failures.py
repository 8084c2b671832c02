"""Failure classes of a job (docs/worker.md "Failures"): permanent, transient, out of memory.

- permanent: no retry can fix it (a refused model, a suite that overlaps the training data, a
  bad recipe, a changed drop): ``uptake.errors.PermanentError``, any ``InputError``, and the
  hub's "no such repo / revision / file" and gated-repo errors;
- transient: the network, the hub or MLflow was unavailable (``OSError``, HTTP errors, a hub
  5xx/429, an MLflow error other than a refused request, a lock wait that timed out): the
  stage is retried ``transient_retries`` times with doubling backoff;
- CUDA out of memory: the train stage is retried once with half the per-device batch and
  twice the accumulation (``halved_batch``), recorded as a run tag;
- anything else (a bug, a stage timeout): the job fails at once, marked retryable so a later
  delivery may try again.
"""

from __future__ import annotations

from uptake.errors import InputError, PermanentError

_PERMANENT_HUB = {
    "RepositoryNotFoundError",
    "RevisionNotFoundError",
    "EntryNotFoundError",
    "RemoteEntryNotFoundError",
    "GatedRepoError",
    "DisabledRepoError",
}
_REFUSED_MLFLOW = {"INVALID_PARAMETER_VALUE", "PERMISSION_DENIED", "UNAUTHENTICATED"}


class JobFailed(PermanentError):
    """How ``run_job`` reports a failed job to ``LongJob``: the stage, a one-line reason and
    whether another delivery could help (``JobOutcome.retryable`` / ``.stage`` read them)."""

    def __init__(self, stage: str, reason: str, *, retryable: bool) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason
        self.retryable = retryable


class StageTimeout(Exception):
    """A stage ran past ``stage_timeout_s``."""


class LaunchedOutOfMemory(RuntimeError):
    """A rank of a launched (multi-GPU) training ran out of memory: its log said so."""


def is_oom(exc: BaseException) -> bool:
    """A CUDA (or other accelerator) out-of-memory error from torch, here or in a rank."""
    if isinstance(exc, LaunchedOutOfMemory):
        return True
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return isinstance(exc, torch.OutOfMemoryError)


def is_permanent(exc: BaseException) -> bool:
    if isinstance(exc, PermanentError | InputError):
        return True
    if getattr(exc, "retryable", None) is False:
        return True
    return type(exc).__name__ in _PERMANENT_HUB


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same stage soon could help."""
    if is_permanent(exc) or isinstance(exc, StageTimeout):
        return False
    if type(exc).__name__ == "Timeout" and type(exc).__module__.startswith("filelock"):
        return True
    try:
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException):
            return exc.error_code not in _REFUSED_MLFLOW
    except ImportError:  # pragma: no cover
        pass
    try:
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        if isinstance(exc, LocalEntryNotFoundError):
            return True  # raised when the hub cannot be reached and nothing is cached
        if isinstance(exc, HfHubHTTPError):
            status = exc.response.status_code if exc.response is not None else None
            return status is None or status >= 500 or status in (408, 429)
    except ImportError:  # pragma: no cover
        pass
    try:
        import requests

        if isinstance(exc, requests.RequestException):
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        import httpx

        if isinstance(exc, httpx.TransportError):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(exc, OSError)

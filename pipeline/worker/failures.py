"""Failure classes of a job (docs/worker.md "Failures"): permanent, transient, out of memory.

- permanent: no retry can fix it (a refused model, a suite that overlaps the training data, a
  bad recipe, a changed drop): any exception whose class is not retryable
  (``uptake.errors.PermanentError``, ``InputError``; see ``uptake.errors.is_retryable``), and
  the hub's "no such repo / revision / file" and gated or disabled repo errors;
- transient: the network, the hub or MLflow was unavailable (``OSError``, HTTP errors, a hub
  5xx/429, an MLflow error other than a refused request, a lock wait that timed out): the
  stage is retried ``transient_retries`` times with doubling backoff;
- CUDA out of memory: the train stage is retried once with half the per-device batch and
  twice the accumulation (``halved_batch``), recorded as a run tag;
- a full disk (``ENOSPC``, a quota, a file-size limit; as an ``OSError`` anywhere in the
  exception's chain, or in the text of a library that wraps it, like torch's and safetensors'
  writers): the job fails at once as retryable with reason ``disk_full: …`` (``as_disk_full``);
  retrying the stage in seconds would not free space;
- anything else (a bug, a stage timeout): the job fails at once, marked retryable so a later
  delivery may try again.

Library errors are told apart by their classes, imported where they are needed (importing the
worker stays fast).
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from uptake.errors import PermanentError, UptakeError, describe_exception, is_retryable

_REFUSED_MLFLOW = {"INVALID_PARAMETER_VALUE", "PERMISSION_DENIED", "UNAUTHENTICATED"}


class JobFailed(UptakeError):
    """How ``run_job`` reports a failed job to ``LongJob``: the stage and a one-line reason
    (``JobOutcome.stage`` reads it); the subclass says whether another delivery could help."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason

    @staticmethod
    def of(stage: str, reason: str, *, retryable: bool) -> JobFailed:
        """The failure of the subclass that ``retryable`` calls for."""
        return (RetryableJobFailure if retryable else PermanentJobFailure)(stage, reason)


class RetryableJobFailure(JobFailed):
    """A later delivery may succeed (an outage that outlasted the stage's retries, a bug, a
    stage timeout)."""

    retryable = True


class PermanentJobFailure(JobFailed, PermanentError):
    """The job fails the same way every time (a refused model, a bad recipe or suite)."""

    retryable = False


class StageTimeout(UptakeError):
    """A stage ran past ``stage_timeout_s`` (retryable by a later delivery, not at once)."""


class LaunchedOutOfMemory(UptakeError, RuntimeError):
    """A rank of a launched (multi-GPU) training ran out of memory: its log said so (a
    RuntimeError, as torch's own ``OutOfMemoryError`` is)."""


def is_oom(exc: BaseException) -> bool:
    """A CUDA (or other accelerator) out-of-memory error from torch, here or in a rank."""
    if isinstance(exc, LaunchedOutOfMemory):
        return True
    import torch

    return isinstance(exc, torch.OutOfMemoryError)


DISK_FULL = "disk_full"
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# what wrapping libraries keep of the OS error: its strerror, Rust's "(os error N)" (Display)
# or its error kind (Debug: safetensors' "IoError(Os { code: 28, kind: StorageFull, … })")
_FULL_TEXTS = (
    "StorageFull",
    "QuotaExceeded",
    "FileTooLarge",
    "No space left on device",
    "Disk quota exceeded",
    "File too large",
    f"(os error {errno.ENOSPC})",
    f"(os error {errno.EDQUOT})",
    f"(os error {errno.EFBIG})",
)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a write that found no room."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            return True
        if any(text in describe_exception(current) for text in _FULL_TEXTS):
            return True
        current = current.__cause__ or current.__context__
    return False


NEARLY_FULL_BYTES = 64 << 20  # less free than this when a write failed: the disk was full


def as_disk_full(exc: BaseException, stage: str, state_dir: Path | None = None) -> BaseException:
    """``exc`` as a retryable ``disk_full`` failure of ``stage`` when the disk is full; else
    ``exc`` itself. Some writers keep no trace of the OS error (torch's checkpoint writer says
    only "file write failed"), so a failure while the state dir's disk has (nearly) no free
    space left counts as a full disk too."""
    if isinstance(exc, JobFailed):
        return exc
    if is_disk_full(exc):
        return RetryableJobFailure(stage, f"{DISK_FULL}: {describe_exception(exc)}")
    if state_dir is not None:
        try:
            free = shutil.disk_usage(state_dir).free
        except OSError:
            return exc
        if free < NEARLY_FULL_BYTES:
            return RetryableJobFailure(
                stage,
                f"{DISK_FULL}: {free >> 20} MiB free on the state dir's disk when it failed: "
                f"{describe_exception(exc)}",
            )
    return exc


def _hub_refused(exc: BaseException) -> bool:
    """The hub answered that the repo, revision or file does not exist, or is gated or
    disabled (``GatedRepoError`` is a ``RepositoryNotFoundError``)."""
    from huggingface_hub.errors import (
        DisabledRepoError,
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, LocalEntryNotFoundError):  # an EntryNotFoundError too, but transient
        return False
    refusals = RepositoryNotFoundError | RevisionNotFoundError | EntryNotFoundError
    return isinstance(exc, refusals | DisabledRepoError)


def is_permanent(exc: BaseException) -> bool:
    """Whether no retry can fix ``exc`` (see the module docstring)."""
    return not is_retryable(exc) or _hub_refused(exc)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same stage soon could help."""
    if is_permanent(exc) or isinstance(exc, StageTimeout) or is_disk_full(exc):
        return False
    import filelock
    import httpx
    import requests
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    from mlflow.exceptions import MlflowException

    if isinstance(exc, filelock.Timeout | LocalEntryNotFoundError):
        return True  # a lock wait that timed out; the hub unreachable with nothing cached
    if isinstance(exc, MlflowException):
        return exc.error_code not in _REFUSED_MLFLOW
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        return status is None or status >= 500 or status in (408, 429)
    return isinstance(exc, requests.RequestException | httpx.TransportError | OSError)

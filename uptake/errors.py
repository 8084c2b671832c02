"""Every failure uptake expects, in one tree: the CLI prints it as one line with its exit code,
the bus and the worker read from its class whether another try could help.

Our exception hierarchy (``retryable`` and ``exit_code`` are class attributes, inherited):

* UptakeError - an expected failure: one line, no traceback (exit 1, retryable)
  x InputError - the input is wrong as given; the same input fails again (exit 2, not retryable)
    + ConfigError - the settings or YAML config (uptake.errors)
      - ChannelNotReady - an alert channel's secret is not set (registry.alerts.http)
    + TemplateRenderError - a chat template cannot render (uptake.models.chat_templates)
    + MalformedWeights - unreadable safetensors (uptake.models.files)
    + EventDecodeError - a message that is no known event, also a ValueError (uptake.events)
    + BodyTooLarge - also a ValueError (uptake.http_server)
    + BadContentLength - also a ValueError (uptake.http_server)
    + BodyTimeout - the body came too slowly, also a TimeoutError (uptake.http_server)
    + MalformedModel - a folder's metadata cannot be read (watcher.sources.dirs)
    + RecipeError - (pipeline.train.recipe)
    + DataError - training data (pipeline.train.data)
    + PreflightError - (pipeline.train.preflight.report)
    + ContextExceeded - the prompt fills the context (serving.engines.transformers_engine)
    + ToolsUnsupported - tools for a template without any (serving.engine)
    + UpstreamInputError - vLLM refused the request (serving.vllm.protocol)
    + UnknownModel - not served here, also a LookupError (serving.swap)
    + ConversionError - a document no converter can read (pipeline.eval.agent.convert)
    + ToolError - an agent's tool call that cannot be done, told to the model
      (pipeline.eval.agent.workspace)
  x DependencyError - something uptake needs is unavailable or misbehaved (exit 3, retryable)
    + StateStoreError - (uptake.db)
    + LimitError - a call past its deadline or size cap (uptake.http_limits)
      - DeadlineError
        · DeadlineExceeded - also an httpx.TimeoutException
      - SizeError
        · ResponseTooLarge - also an httpx.HTTPError
    + SourceFault - a watcher poll that failed (watcher.faults)
    + JudgeError - (pipeline.eval.judge)
    + NoChampion - no version loaded yet, also a LookupError (serving.swap)
    + VersionClosed - a request reached a closed version (serving.engine)
    + QueueFull - the version's queue is full, a 429 (serving.engine)
    + UpstreamError - the vLLM server failed a request (serving.vllm.protocol)
    + VllmStartError - (serving.vllm.server)
    + CorruptCopy - a cached version's files fail their checksum (serving.champions)
    + LoadTimeout - a download or load past its deadline, also a TimeoutError (serving.swap)
  x PermanentError - a refusal that no retry can change (exit 1, not retryable)
    + WebhookRejected - not provably from the sender, also a ValueError (uptake.webhooks)
    + FetchRefused - (pipeline.worker.fetch)
    + SourceRefused - an event disagrees with its configured source (pipeline.worker.trust)
    + EventMismatch - (registry.evidence)
    + UnknownVersion - (registry.evidence)
    + UnmanagedModel - (registry.managed)
    + ReportError - (registry.report.model)
  x ConflictError - someone else got there first; redo against what they left (exit 1, retryable)
    + JobLeaseLost - another worker took the job's lease (pipeline.worker.lease)
    + ModelLeaseLost - another promoter took the model's lease (registry.locks)
    + LockTimeout - the model's lease stayed taken too long (registry.locks)
    + PromotionConflict - the champion moved under a decision (registry.enact)
  x JobFailed - how a worker job ended badly, with its stage (pipeline.worker.failures)
    + RetryableJobFailure - a later delivery may succeed
    + PermanentJobFailure - also a PermanentError
  x StageTimeout - a job stage ran past its limit (pipeline.worker.failures)
  x LaunchedOutOfMemory - a rank ran out of memory, also a RuntimeError (pipeline.worker.failures)
  x ServiceFailed - a service's thread died (uptake.service_runtime)
  x ApiError - an OpenAI-style error answer, its status says whose fault (serving.api.protocol)

A new exception goes under the branch that says what a caller should do about it, in the module
that raises it; a private one that only steers control flow (``_Interrupted``) stays outside.
``tests/core/test_error_tree.py`` holds every public exception of the five packages to this tree.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import ValidationError

ONE_LINE_CHARS = 1_000  # a reason in a log line, an event, a run tag, an exit message


class UptakeError(Exception):
    """Base for expected failures: the message is shown to the user as is."""

    exit_code: ClassVar[int] = 1
    retryable: ClassVar[bool] = True  # unless a branch says otherwise, another try may help


class InputError(UptakeError):
    """Bad input (config, suite, recipe, arguments, a request or message): exit code 2.

    Not retryable: the same input fails the same way; the bus dead-letters it at once."""

    exit_code = 2
    retryable = False


class ConfigError(InputError):
    """The settings or YAML config file are invalid."""


class DependencyError(UptakeError):
    """A required external piece (broker binary, server, endpoint) is missing, unreachable or
    misbehaving: exit code 3, and retryable, since it may be back later."""

    exit_code = 3
    retryable = True


class PermanentError(UptakeError):
    """A refusal that no retry can fix (a refused model, a record too large for the broker).

    The bus dead-letters it at once instead of retrying; a long job that raises it is not run
    again."""

    retryable = False


class ConflictError(UptakeError):
    """Another holder or writer got there first (a lease taken over, a champion that moved):
    nothing more is written, and the work is done again against what the other one left."""

    retryable = True


def is_retryable(exc: BaseException) -> bool:
    """Whether another try could help: for uptake's errors, their class says; any other
    exception is retryable unless it carries a boolean ``retryable`` of its own (google-auth's
    errors do, which MLflow raises for a GCS artifact store)."""
    if isinstance(exc, UptakeError):
        return type(exc).retryable
    flag = getattr(exc, "retryable", None)
    return flag if isinstance(flag, bool) else True


def one_line(text: object) -> str:
    """``text`` on one line and at most ``ONE_LINE_CHARS`` long (cut with an ellipsis)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= ONE_LINE_CHARS else flat[: ONE_LINE_CHARS - 1] + "…"


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` for logs and the DLQ, even for an exception whose ``str()`` fails."""
    try:
        text = encodable(str(exc))
    except Exception:  # a broken __str__ must not turn one failure into a dead consumer
        text = "<message unavailable: str() failed>"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def encodable(text: str) -> str:
    """``text`` with each lone surrogate written as its escape (U+D800 as backslash, "ud800"),
    so it can be logged, sent and stored as UTF-8: a log handler or a serializer raises on one."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


_SECRET_WORDS = ("secret", "token", "key", "password")


def _secret_field(loc: tuple[int | str, ...]) -> bool:
    """Never echo what was given for a secret (an error line ends up in logs and CI output)."""
    return any(word in str(part).lower() for part in loc for word in _SECRET_WORDS)


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """Render every problem of a pydantic error on one line, each naming its field path."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(printable_field(p) for p in err["loc"]) or "<root>"
        if prefix:
            loc = f"{prefix}.{loc}" if loc != "<root>" else prefix
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        given = err.get("input")
        quiet = err["type"] in ("missing", "extra_forbidden") or _secret_field(err["loc"])
        shown = "" if quiet else f" (got {given!r})"
        parts.append(f"{loc}: {msg}{shown}")
    return " ".join("; ".join(parts).splitlines())  # a message can hold a newline; keep one line


def printable_field(part: object) -> str:
    """A field path part as it can be printed on one line (a YAML key may hold a newline)."""
    text = str(part)
    return text if text.isprintable() else repr(text)

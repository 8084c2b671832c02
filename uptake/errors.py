"""Errors that the CLI turns into one clear line and an exit code instead of a traceback."""

from __future__ import annotations

from pydantic import ValidationError


class UptakeError(Exception):
    """Base for expected failures: the message is shown to the user as is."""

    exit_code: int = 1


class InputError(UptakeError):
    """Bad input from the user (config, suite, recipe, arguments): exit code 2."""

    exit_code = 2


class ConfigError(InputError):
    """The settings or YAML config file are invalid."""


class DependencyError(UptakeError):
    """A required external piece (broker binary, server) is missing or unreachable."""

    exit_code = 3


class PermanentError(UptakeError):
    """A failure that no retry can fix (a refused model, a record too large for the broker).

    The bus dead-letters it at once instead of retrying; a long job that raises it is not run
    again. Any exception with a boolean ``retryable`` attribute is classified by it the same
    way (see ``is_retryable``), so a library's own error types can say so too.
    """

    retryable = False


def is_retryable(exc: BaseException) -> bool:
    """Whether retrying could help: the exception's own ``retryable`` flag, else yes."""
    flag = getattr(exc, "retryable", None)
    return flag if isinstance(flag, bool) else True


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

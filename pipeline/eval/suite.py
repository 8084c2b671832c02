"""Rubric suites: the JSONL format of DESIGN.md, loaded with every problem reported at once.

A suite decides promotions, so a broken one must fail loudly before anything is generated:
the loader collects every bad line (``file:line: reason``) into a single ``InputError``.
The suite's sha256 (of the file's bytes) identifies it in results and MLflow tags.

Lines are split on ``\n`` only (JSON escapes every other control character, but a prompt may
hold a raw U+2028 or U+0085, which ``str.splitlines`` would cut the line at); a line that
JSON cannot parse at all (nested too deeply, an integer over Python's digit limit) is a bad
line like any other, and every number has a bound.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from uptake.errors import InputError, printable_field

DEFAULT_MAX_NEW_TOKENS = 256
MAX_NEW_TOKENS_LIMIT = 131_072  # 128k tokens: past any answer a rubric grades
CHECK_TYPES = ("contains", "not_contains", "regex", "any_of", "all_of", "judge")


class _Strict(BaseModel):
    """Unknown keys are typos in a hand-written suite, so they are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ContainsCheck(_Strict):
    type: Literal["contains"]
    value: str = Field(min_length=1)
    ignore_case: bool = False


class NotContainsCheck(_Strict):
    type: Literal["not_contains"]
    value: str = Field(min_length=1)
    ignore_case: bool = False


class RegexCheck(_Strict):
    """``re.search`` on the normalised response; ``ignore_case`` adds ``re.IGNORECASE``."""

    type: Literal["regex"]
    pattern: str = Field(min_length=1)
    ignore_case: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"bad regex {pattern[:80]!r}: {exc}") from None
        except RecursionError:  # "((((…": the parser recurses per group
            raise ValueError(f"bad regex {pattern[:80]!r}: nested too deeply") from None
        except OverflowError as exc:  # "a{99999999999}"
            raise ValueError(f"bad regex {pattern[:80]!r}: {exc}") from None
        return pattern


class _Combinator(_Strict):
    """``values`` (plain substrings) or ``checks`` (nested deterministic checks), not both."""

    values: list[Annotated[str, Field(min_length=1)]] | None = None
    checks: list[DeterministicCheck] | None = None
    ignore_case: bool = False

    def _kind(self) -> str:
        """The subclass's ``type`` (``any_of`` / ``all_of``), for the error text."""
        return str(getattr(self, "type", "check"))

    @model_validator(mode="after")
    def _one_source(self) -> _Combinator:
        given = [x for x in (self.values, self.checks) if x is not None]
        if len(given) != 1:
            raise ValueError(f"{self._kind()} needs exactly one of 'values' or 'checks'")
        if not given[0]:
            raise ValueError(f"{self._kind()} needs at least one entry")
        return self


class AnyOfCheck(_Combinator):
    type: Literal["any_of"]


class AllOfCheck(_Combinator):
    type: Literal["all_of"]


class JudgeCheck(_Strict):
    """Graded by the LLM judge against the criterion's description (+ optional instructions)."""

    type: Literal["judge"]
    instructions: str | None = None


DeterministicCheck = Annotated[
    ContainsCheck | NotContainsCheck | RegexCheck | AnyOfCheck | AllOfCheck,
    Field(discriminator="type"),
]
Check = Annotated[
    ContainsCheck | NotContainsCheck | RegexCheck | AnyOfCheck | AllOfCheck | JudgeCheck,
    Field(discriminator="type"),
]
_Combinator.model_rebuild()
AnyOfCheck.model_rebuild()
AllOfCheck.model_rebuild()


class Message(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class Criterion(_Strict):
    id: str = Field(min_length=1)
    description: str = Field(min_length=1)
    check: Check
    weight: float = Field(1.0, gt=0, le=1000)  # its share of an RL reward (RaR); metrics ignore it


class Task(_Strict):
    id: str = Field(min_length=1)
    practice_area: str = Field("general", min_length=1)
    messages: list[Message] = Field(min_length=1)
    criteria: list[Criterion] = Field(min_length=1)
    max_new_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS_LIMIT)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, messages: list[Message]) -> list[Message]:
        if messages and messages[-1].role != "user":
            raise ValueError("the last message must be from the user")
        return messages

    @field_validator("criteria")
    @classmethod
    def _unique_criteria(cls, criteria: list[Criterion]) -> list[Criterion]:
        seen: set[str] = set()
        for criterion in criteria:
            if criterion.id in seen:
                raise ValueError(f"duplicate criterion id {criterion.id!r}")  # same text as load
            seen.add(criterion.id)
        return criteria

    @property
    def prompt(self) -> str:
        """The final user message: what the held-out check compares with training data."""
        return self.messages[-1].content

    @property
    def has_judge(self) -> bool:
        return any(c.check.type == "judge" for c in self.criteria)


class SuiteHeader(_Strict):
    """Optional first line ``{"suite": {...}}``: suite-wide settings."""

    name: str | None = None
    max_new_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS_LIMIT)
    description: str | None = None


class Suite(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    path: str
    sha256: str
    tasks: list[Task]
    max_new_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS_LIMIT)

    @property
    def has_judge(self) -> bool:
        return any(t.has_judge for t in self.tasks)

    @property
    def areas(self) -> list[str]:
        return sorted({t.practice_area for t in self.tasks})

    @property
    def n_criteria(self) -> int:
        return sum(len(t.criteria) for t in self.tasks)

    def max_new_tokens_for(self, task: Task, override: int | None = None) -> int:
        """Call override > task > suite header > DEFAULT_MAX_NEW_TOKENS."""
        if override is not None and not 0 <= override <= MAX_NEW_TOKENS_LIMIT:
            raise InputError(f"max_new_tokens must be 1..{MAX_NEW_TOKENS_LIMIT}, got {override}")
        return override or task.max_new_tokens or self.max_new_tokens or DEFAULT_MAX_NEW_TOKENS


def _describe(exc: ValidationError) -> list[str]:
    """Pydantic errors as short ``field: reason`` strings that a suite author can act on."""
    out = []
    for err in exc.errors(include_url=False):
        loc_parts = [printable_field(p) for p in err["loc"] if str(p) not in CHECK_TYPES]
        loc = ".".join(loc_parts) or "<line>"
        kind = err["type"]
        if kind == "missing":
            msg = "missing"
        elif kind == "extra_forbidden":
            msg = "unknown field"
        elif kind == "union_tag_invalid":
            tag = err.get("ctx", {}).get("tag")
            nested = "checks" in loc_parts
            allowed = [t for t in CHECK_TYPES if not (nested and t == "judge")]
            if nested and tag == "judge":
                msg = "'judge' is not allowed inside any_of/all_of"
            else:
                msg = f"unknown check type {tag!r} (expected one of {', '.join(allowed)})"
        elif kind == "union_tag_not_found":
            msg = "missing 'type'"
        elif kind == "too_short" and loc_parts and loc_parts[-1] in ("criteria", "messages"):
            msg = "must not be empty"
        else:
            msg = err["msg"].removeprefix("Value error, ")
        out.append(f"{loc}: {msg}")
    return out


def _duplicate_criteria(data: dict[str, Any]) -> list[str]:
    """Duplicate criterion ids even when other errors stop the model validator from running."""
    criteria = data.get("criteria")
    if not isinstance(criteria, list):
        return []
    ids: list[str] = [
        c["id"] for c in criteria if isinstance(c, dict) and isinstance(c.get("id"), str)
    ]
    dups = sorted({i for i in ids if ids.count(i) > 1})
    return [f"criteria: duplicate criterion id {i!r}" for i in dups]


def jsonl_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of each non-blank line, split on ``\n`` only."""
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            yield number, line


def parse_json_line(line: str) -> Any:
    """``json.loads`` with every failure as ``ValueError("invalid JSON (...)")``: besides
    syntax errors, a line nested too deeply (RecursionError) or an integer over Python's
    digit limit (ValueError) must be one bad line, not a crash."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise ValueError("invalid JSON (nested too deeply)") from None
    except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer string ..."
        raise ValueError(f"invalid JSON ({str(exc).split(':')[0]})") from None


def load_suite(path: str | Path) -> Suite:
    """Parse and validate a suite file; raise one InputError naming every bad line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"suite file not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"invalid suite {path}: not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None

    errors: list[str] = []
    tasks: list[Task] = []
    header: SuiteHeader | None = None
    first_line: dict[str, int] = {}
    for number, line in jsonl_lines(text):
        where = f"{path}:{number}"
        try:
            data = parse_json_line(line)
        except ValueError as exc:
            errors.append(f"{where}: {exc}")
            continue
        if not isinstance(data, dict):
            errors.append(f"{where}: expected a JSON object, got {type(data).__name__}")
            continue
        if set(data) == {"suite"}:
            if header is not None or tasks or first_line:
                errors.append(f"{where}: the suite header must be the first line")
                continue
            try:
                header = SuiteHeader.model_validate(data["suite"])
            except ValidationError as exc:
                errors.extend(f"{where}: suite.{m}" for m in _describe(exc))
            continue
        task_id = data.get("id")
        if isinstance(task_id, str) and task_id:
            if task_id in first_line:
                errors.append(
                    f"{where}: duplicate task id {task_id!r} (first on line {first_line[task_id]})"
                )
            else:
                first_line[task_id] = number
        try:
            tasks.append(Task.model_validate(data))
        except ValidationError as exc:
            problems = _describe(exc)
            problems += [p for p in _duplicate_criteria(data) if p not in problems]
            errors.extend(f"{where}: {m}" for m in problems)
    if not tasks and not errors:
        errors.append(f"{path}: no tasks")
    if errors:
        count = f"{len(errors)} problem{'s' if len(errors) > 1 else ''}"
        raise InputError(f"invalid suite {path} ({count}): " + "; ".join(errors))
    return Suite(
        name=(header.name if header and header.name else path.stem),
        path=str(path),
        sha256=hashlib.sha256(raw).hexdigest(),
        tasks=tasks,
        max_new_tokens=header.max_new_tokens if header else None,
    )

"""Agentic suites: a directory of Harvey LAB-format tasks, loaded as they are.

Layout: ``[DIR/]tasks/<practice-area>/<task>[/<scenario>]/task.json`` beside ``documents/``.
A task's id is its folder's path under ``tasks/`` and its practice area the first segment.
Every problem of every task is collected into one ``InputError`` naming the file and field,
so a suite author fixes them in one pass. The suite's sha256 covers every file under
``tasks/`` (task.json and documents alike): a changed document is a changed exam.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from uptake.errors import InputError, describe_validation_error

TASK_FILE = "task.json"
DOCUMENTS = "documents"
MAX_TASK_BYTES = 4 << 20  # a task.json with 75 criteria is tens of KiB


class _Lab(BaseModel):
    """LAB adds fields over time: unknown keys are kept out, known ones are checked."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class EvaluationOptions(_Lab):
    include_docx_redlines: bool = False


class LabCriterion(_Lab):
    id: str = Field(min_length=1)
    title: str = Field(min_length=1)
    match_criteria: str = Field(min_length=1)
    deliverables: list[str] = Field(default_factory=list)
    sources: list[Any] = Field(default_factory=list)
    evaluation_options: EvaluationOptions | None = None


class AgenticTask(_Lab):
    """One LAB task; ``id``/``practice_area``/``document_dir`` come from where it lies."""

    id: str
    practice_area: str
    document_dir: str  # absolute path of its documents/ folder ("" when it has none)
    title: str = Field(min_length=1)
    instructions: str = Field(min_length=1)
    deliverables: dict[str, str] = Field(default_factory=dict)
    work_type: Literal["analyze", "draft", "review", "research"] | None = None
    tags: list[str] = Field(default_factory=list)
    difficulty: str | int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    criteria: list[LabCriterion] = Field(min_length=1)

    @field_validator("deliverables")
    @classmethod
    def _plain_names(cls, deliverables: dict[str, str]) -> dict[str, str]:
        for name, filename in deliverables.items():
            pure = PurePosixPath(filename)
            if not filename or pure.is_absolute() or ".." in pure.parts or "\\" in filename:
                raise ValueError(f"deliverable {name!r}: {filename!r} is not a plain file name")
        return deliverables

    @field_validator("criteria")
    @classmethod
    def _unique_ids(cls, criteria: list[LabCriterion]) -> list[LabCriterion]:
        counts = Counter(c.id for c in criteria)
        dups = sorted(i for i, n in counts.items() if n > 1)
        if dups:
            raise ValueError(f"duplicate criterion id(s) {', '.join(map(repr, dups))}")
        return criteria

    @property
    def prompt(self) -> str:
        """What the agent is told (and what the held-out check compares)."""
        return self.instructions

    def documents(self) -> list[Path]:
        """The task's documents, sorted, relative to its documents folder."""
        if not self.document_dir:
            return []
        root = Path(self.document_dir)
        return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


class AgenticSuite(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["agentic"] = "agentic"
    name: str
    path: str
    sha256: str
    tasks: list[AgenticTask]

    @property
    def areas(self) -> list[str]:
        return sorted({t.practice_area for t in self.tasks})

    @property
    def n_criteria(self) -> int:
        return sum(len(t.criteria) for t in self.tasks)

    @property
    def has_judge(self) -> bool:
        """Every LAB criterion is judged: there are no deterministic checks."""
        return True


def tasks_root(path: Path) -> Path:
    """``DIR/tasks`` when it exists (a LAB checkout), else ``DIR`` itself."""
    return path / "tasks" if (path / "tasks").is_dir() else path


def suite_files(root: Path) -> list[Path]:
    """Every file under ``root`` that belongs to the suite (dot-files and folders left out)."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_symlink() or p.is_file():
            out.append(p)
    return out


def content_sha256(root: Path) -> str:
    """sha256 over (relative path, file sha256) of every suite file, in path order."""
    digest = hashlib.sha256()
    for p in suite_files(root):
        rel = p.relative_to(root).as_posix()
        digest.update(rel.encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(p.read_bytes()).digest() if p.is_file() else b"link")
    return digest.hexdigest()


def _load_task(task_file: Path, root: Path) -> AgenticTask:
    rel = task_file.parent.relative_to(root)
    if len(rel.parts) < 2:
        raise ValueError(
            "<path>: a task lies at tasks/<practice-area>/<task>/task.json, not at "
            f"{rel.as_posix() or '.'}"
        )
    raw = task_file.read_bytes()
    if len(raw) > MAX_TASK_BYTES:
        raise ValueError(f"<file>: over {MAX_TASK_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"<file>: not UTF-8 (at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"<file>: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise ValueError("<file>: invalid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise ValueError(f"<file>: expected a JSON object, got {type(data).__name__}")
    docs = task_file.parent / DOCUMENTS
    data = {
        **{k: v for k, v in data.items() if k not in ("id", "practice_area", "document_dir")},
        "id": rel.as_posix(),
        "practice_area": rel.parts[0],
        "document_dir": str(docs.resolve()) if docs.is_dir() else "",
    }
    return AgenticTask.model_validate(data)


def _check_references(task: AgenticTask) -> list[str]:
    """Criteria that name deliverables the task does not define."""
    problems = []
    for i, criterion in enumerate(task.criteria):
        unknown = [d for d in criterion.deliverables if d not in task.deliverables]
        if unknown:
            problems.append(
                f"criteria.{i}.deliverables: unknown deliverable(s) {', '.join(map(repr, unknown))}"
                f" (task defines {', '.join(map(repr, task.deliverables)) or 'none'})"
            )
    return problems


def load_agentic_suite(path: str | Path) -> AgenticSuite:
    """Load and validate every task under ``path``; one InputError lists every problem."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"suite directory not found: {path}")
    root = tasks_root(path)
    errors: list[str] = []
    for p in suite_files(root):
        if p.is_symlink():
            errors.append(f"{p}: a symlink (a suite holds plain files only)")
    tasks: list[AgenticTask] = []
    for task_file in sorted(root.rglob(TASK_FILE)):
        rel = task_file.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or DOCUMENTS in rel.parts[:-1]:
            continue
        try:
            task = _load_task(task_file, root)
        except ValidationError as exc:
            errors.extend(
                f"{task_file}: {line}"
                for line in describe_validation_error(exc).split("; ")
                if line
            )
            continue
        except (ValueError, OSError) as exc:
            errors.append(f"{task_file}: {exc}")
            continue
        errors.extend(f"{task_file}: {p}" for p in _check_references(task))
        tasks.append(task)
    if not tasks and not errors:
        errors.append(f"{path}: no {TASK_FILE} under {root}")
    if errors:
        count = f"{len(errors)} problem{'s' if len(errors) > 1 else ''}"
        raise InputError(f"invalid agentic suite {path} ({count}): " + "; ".join(errors))
    return AgenticSuite(
        name=path.resolve().name, path=str(path), sha256=content_sha256(root), tasks=tasks
    )


class SuiteCheck(BaseModel):
    """What ``uptake suite check`` prints."""

    name: str
    sha256: str
    n_tasks: int
    n_criteria: int
    per_area: dict[str, int]
    criteria_per_task: dict[str, int]
    document_types: dict[str, int]
    n_documents: int


def check_summary(suite: AgenticSuite) -> SuiteCheck:
    types: Counter[str] = Counter()
    for task in suite.tasks:
        for doc in task.documents():
            types[doc.suffix.lower().lstrip(".") or "(none)"] += 1
    return SuiteCheck(
        name=suite.name,
        sha256=suite.sha256,
        n_tasks=len(suite.tasks),
        n_criteria=suite.n_criteria,
        per_area=dict(sorted(Counter(t.practice_area for t in suite.tasks).items())),
        criteria_per_task={t.id: len(t.criteria) for t in suite.tasks},
        document_types=dict(sorted(types.items())),
        n_documents=sum(types.values()),
    )

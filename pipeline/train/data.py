"""Training data: chat JSONL for SFT, preference pairs for DPO, rubric tasks for GRPO/SDPO.

Each file is validated line by line.

A bad line is reported with its file and line number (InputError, exit 2) before any model is
loaded, so a typo in the data costs seconds, not a GPU allocation. Extra keys on a line (ids,
practice areas) are allowed and dropped: the trainer only sees the conversation.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from uptake.errors import InputError, describe_validation_error


class DataError(InputError):
    """A training data file is missing or has an invalid line."""


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class ChatExample(BaseModel):
    """One SFT example: a conversation with at least one assistant turn to learn from."""

    model_config = ConfigDict(extra="ignore")

    messages: list[Message] = Field(min_length=2)

    @field_validator("messages")
    @classmethod
    def _has_assistant_turn(cls, value: list[Message]) -> list[Message]:
        if not any(m.role == "assistant" for m in value):
            raise ValueError("needs at least one assistant message")
        return value


def _as_turns(value: Any) -> Any:
    """Preference answers may be given as plain strings: wrap them as one assistant turn."""
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    return value


class PreferenceExample(BaseModel):
    """One DPO pair: a prompt conversation, a preferred and a dispreferred assistant answer."""

    model_config = ConfigDict(extra="ignore")

    prompt: list[Message] = Field(min_length=1)
    chosen: list[Message] = Field(min_length=1)
    rejected: list[Message] = Field(min_length=1)

    _str_prompt = field_validator("prompt", mode="before")(
        lambda v: [{"role": "user", "content": v}] if isinstance(v, str) else v
    )
    _str_answers = field_validator("chosen", "rejected", mode="before")(_as_turns)


def _read_jsonl(path: Path, model: type[BaseModel]) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from None
            except (RecursionError, ValueError):  # nested too deeply, an integer too long
                raise DataError(
                    f"{path}:{lineno}: invalid JSON: nested too deeply or a number too long"
                ) from None
            try:
                example = model.model_validate(obj)
            except ValidationError as exc:
                raise DataError(f"{path}:{lineno}: {describe_validation_error(exc)}") from None
            rows.append(example.model_dump(exclude_none=True))
    if not rows:
        raise DataError(f"{path}: no examples")
    return rows


def load_chat_rows(path: Path) -> list[dict[str, Any]]:
    """SFT rows as ``{"messages": [...]}`` dicts."""
    return _read_jsonl(path, ChatExample)


def load_preference_rows(path: Path) -> list[dict[str, Any]]:
    """DPO rows as ``{"prompt": [...], "chosen": [...], "rejected": [...]}`` dicts."""
    return _read_jsonl(path, PreferenceExample)


def load_rubric_tasks(path: Path, stage: str) -> list[Any]:  # -> list[pipeline.eval.Task]
    """An RL stage's tasks, in the suite format (``messages`` + ``criteria``), parsed by the
    evaluation's own loader so training and evaluation read rubrics alike."""
    from pipeline.eval.suite import load_suite

    try:
        return list(load_suite(path).tasks)
    except InputError as exc:
        raise DataError(f"stages.{stage}.data: rubric tasks needed: {exc}") from None


def rubric_rows(tasks: list[Any]) -> list[dict[str, Any]]:
    """Dataset rows of an RL stage: the prompt conversation and the task it comes from."""
    return [
        {"prompt": [m.model_dump() for m in task.messages], "task_id": task.id} for task in tasks
    ]


def to_dataset(rows: list[dict[str, Any]]):  # -> datasets.Dataset
    from datasets import Dataset

    return Dataset.from_list(rows)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

"""Held-out check: a suite task must not appear in the training data.

A task counts as leaked when its id appears as a training row's ``id``/``task_id``, or its
prompt (the final user message) equals any user message in the training file after NFKC,
case folding and whitespace collapsing. Training on the exam inflates every metric that
promotion relies on, so overlap is an input error, not a warning.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from pipeline.eval.suite import jsonl_lines, parse_json_line
from pipeline.eval.suites import AnySuite
from uptake.errors import InputError

_WS = re.compile(r"\s+")


def canonical_prompt(text: str) -> str:
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def find_overlap(train_path: str | Path, suite: AnySuite) -> list[str]:
    """Describe every suite task found in the chat-JSONL training file (empty: none)."""
    path = Path(train_path)
    if not path.is_file():
        raise InputError(f"training data not found: {path}")
    ids: dict[str, int] = {}
    prompts: dict[str, int] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"training data {path}: not UTF-8 (at byte {exc.start})") from None
    for number, line in jsonl_lines(text):  # "\n" only: a message may hold a raw U+2028
        try:
            row = parse_json_line(line)
        except ValueError as exc:
            raise InputError(f"{path}:{number}: {exc}") from None
        if not isinstance(row, dict):
            continue
        for key in ("id", "task_id"):
            if isinstance(row.get(key), str):
                ids.setdefault(row[key], number)
        for message in row.get("messages") or []:
            if isinstance(message, dict) and message.get("role") == "user":
                prompts.setdefault(canonical_prompt(str(message.get("content", ""))), number)
    found = []
    for task in suite.tasks:
        if task.id in ids:
            found.append(f"task id {task.id!r} ({path.name}:{ids[task.id]})")
        key = canonical_prompt(task.prompt)
        if key in prompts:
            found.append(f"prompt of task {task.id!r} ({path.name}:{prompts[key]})")
    return found


def check_holdout(train_path: str | Path, suite: AnySuite) -> None:
    """Raise InputError if any suite task id or prompt appears in the training data."""
    found = find_overlap(train_path, suite)
    if found:
        shown = "; ".join(found[:20]) + (f"; and {len(found) - 20} more" if len(found) > 20 else "")
        raise InputError(
            f"suite {suite.name} is not held out from {train_path}: "
            f"{len(found)} overlap(s): {shown}"
        )

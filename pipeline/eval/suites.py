"""Either kind of suite: a JSONL file of single-turn tasks, or a directory of LAB-format tasks.

``load_suite`` picks the loader by what the path is; ``suite_sha256`` is the identity that
results, the worker's job key and the MLflow ``uptake.suite_sha`` tag record for it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline.eval.agent.lab import AgenticSuite, content_sha256, load_agentic_suite, tasks_root
from pipeline.eval.suite import Suite
from pipeline.eval.suite import load_suite as load_jsonl_suite

AnySuite = Suite | AgenticSuite


def load_suite(path: str | Path) -> AnySuite:
    """A JSONL suite file, or a directory of LAB-format tasks (``pipeline.eval.agent``)."""
    if Path(path).is_dir():
        return load_agentic_suite(path)
    return load_jsonl_suite(path)


def suite_sha256(path: str | Path) -> str:
    """A file's bytes' sha256, or a directory's content hash (every task.json and document)."""
    path = Path(path)
    if path.is_dir():
        return content_sha256(tasks_root(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()

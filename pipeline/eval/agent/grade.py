"""Grading with LAB's protocol: one judge call per criterion, on the deliverables it names.

The judge sees the task's title and instructions, the deliverables' text (converted like the
agent's ``read``), and the criterion's title and ``match_criteria`` — never ``task.json`` or
any other criterion. A criterion whose deliverables are missing fails without a call; a
criterion that names none is judged against every output. A judge that never gives a valid
verdict is a *judge error*, counted apart from fails (the criterion does not pass). With two
judges a criterion passes only when both say pass (the "dual" result); each judge's own
verdicts are kept for per-judge rates and agreement.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel

from pipeline.eval.agent.convert import ConversionError, to_text
from pipeline.eval.agent.lab import AgenticTask, LabCriterion
from pipeline.eval.judge import Judge, JudgeError
from pipeline.eval.results import CriterionResult
from uptake.errors import DependencyError

MAX_DELIVERABLE_CHARS = 400_000  # about 100k tokens: more is cut, and the cut is said

SYSTEM_PROMPT = (
    "You are an expert legal evaluator grading an AI agent's work product against ONE "
    "criterion. Read the task, the deliverable(s) and the criterion. Apply the criterion's "
    "PASS/FAIL conditions literally. Answer with a single JSON object and nothing else: "
    '{"verdict": "pass" or "fail", "reasoning": "one or two sentences"}.'
)


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def output_files(output: Path) -> list[Path]:
    """Plain files under ``output`` — never a symlink: an agent with ``bash`` could link its
    "deliverable" to a file outside the workspace, and the judge would be sent that file."""
    if not output.is_dir():
        return []
    return sorted(p for p in output.rglob("*") if p.is_file() and not p.is_symlink())


def find_deliverable(output: Path, filename: str) -> Path | None:
    """The output file meant by ``filename``, matched leniently: exact, then ignoring case,
    then by normalised name (case, punctuation), then by stem with another extension."""
    files = output_files(output)
    want = Path(filename)
    for test in (
        lambda p: p.relative_to(output).as_posix() == filename,
        lambda p: p.name == want.name,
        lambda p: p.name.lower() == want.name.lower(),
        lambda p: _norm(p.name) == _norm(want.name),
        lambda p: _norm(p.stem) == _norm(want.stem),
    ):
        found = [p for p in files if test(p)]
        if found:
            return found[0]
    return None


class DeliverableText(BaseModel):
    text: str
    missing: list[str]


def deliverable_text(task: AgenticTask, criterion: LabCriterion, output: Path) -> DeliverableText:
    """The text the judge grades for ``criterion``: its deliverables, each under a header."""
    if criterion.deliverables:
        wanted = [(n, task.deliverables[n]) for n in criterion.deliverables]
        paths = [(n, f, find_deliverable(output, f)) for n, f in wanted]
    else:
        paths = [(p.name, p.name, p) for p in output_files(output)]
        if not paths:
            return DeliverableText(text="", missing=["(any output)"])
    missing = [f for _, f, p in paths if p is None]
    parts = []
    for name, _filename, path in paths:
        if path is None:
            continue
        try:
            body = to_text(path)
        except ConversionError as exc:
            body = f"[unreadable: {exc}]"
        parts.append(f"=== {name}: {path.name} ===\n{body}")
    text = "\n\n".join(parts)
    if len(text) > MAX_DELIVERABLE_CHARS:
        text = text[:MAX_DELIVERABLE_CHARS] + "\n[... deliverable cut for length]"
    return DeliverableText(text=text, missing=missing)


def judge_messages(task: AgenticTask, criterion: LabCriterion, text: str) -> list[dict[str, str]]:
    user = (
        f"TASK TITLE: {task.title}\n\nTASK INSTRUCTIONS:\n{task.instructions}\n\n"
        f"DELIVERABLE(S):\n<<<\n{text}\n>>>\n\n"
        f"CRITERION: {criterion.title}\n\nMATCH CRITERIA:\n{criterion.match_criteria}"
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def grade_criterion(
    task: AgenticTask,
    criterion: LabCriterion,
    output: Path,
    judges: list[tuple[str, Judge]],
    final_answer: str | None = None,
) -> CriterionResult:
    """One criterion: missing deliverable → fail, no call; else each judge once.

    ``final_answer``: a model that wrote no file at all but answered in text (one that cannot
    use tools) is graded on that text in place of the deliverables."""
    base = {"id": criterion.id, "description": criterion.title, "type": "judge"}
    got = deliverable_text(task, criterion, output)
    wrote_nothing = not output_files(output)
    if got.missing and wrote_nothing and final_answer and final_answer.strip():
        got = DeliverableText(
            text=f"=== final answer (no files written) ===\n{final_answer}", missing=[]
        )
    if got.missing:
        return CriterionResult(
            **base, passed=False, reason=f"missing deliverable: {', '.join(got.missing)}"
        )
    messages = judge_messages(task, criterion, got.text)
    key = [
        task.title,
        task.instructions,
        criterion.title,
        criterion.match_criteria,
        hashlib.sha256(got.text.encode("utf-8")).hexdigest(),
    ]
    verdicts: dict[str, bool | None] = {}
    reasons = []
    errors = []
    for name, judge in judges:
        try:
            verdict = judge.grade_messages(
                messages, key, f"task {task.id!r} criterion {criterion.id!r}"
            )
        except (JudgeError, DependencyError) as exc:
            verdicts[name] = None
            errors.append(str(exc))
            continue
        verdicts[name] = verdict.passed
        reasons.append(verdict.reason if len(judges) == 1 else f"{name}: {verdict.reason}")
    if errors:
        return CriterionResult(
            **base,
            passed=False,
            reason="judge error: " + "; ".join(errors)[:500],
            judge_error=True,
            verdicts=verdicts,
        )
    return CriterionResult(
        **base,
        passed=all(v is True for v in verdicts.values()),
        reason=" | ".join(reasons),
        verdicts=verdicts if len(judges) > 1 else None,
    )

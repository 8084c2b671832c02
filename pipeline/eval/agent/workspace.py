"""A task's workspace and the tools the agent uses on it.

``<root>/documents/`` holds copies of the task's documents (read-only: files 0444 and every
write refused), ``<root>/output/`` is where deliverables go. Every path a model names is
resolved inside the workspace: ``..``, absolute paths and symlinks that lead out are refused
with an error text the model sees as the tool's result — a model's mistake (or mischief) is a
turn of the conversation, never an exception in the harness.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.eval.agent.convert import ConversionError, to_text
from pipeline.eval.agent.sandbox import run_sandboxed
from uptake.errors import InputError

MAX_READ_LINES = 2000
MAX_RESULT_CHARS = 30_000
MAX_GREP_MATCHES = 200
MAX_GLOB = 500
MAX_WRITE_BYTES = 5 << 20


class ToolError(InputError):
    """A tool call that cannot be done: its message goes back to the model."""


def _schema(name: str, description: str, props: dict[str, Any], required: list[str]) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": props, "required": required},
        },
    }


_S = {"type": "string"}
_I = {"type": "integer"}
TOOL_SCHEMAS: dict[str, dict[str, Any]] = {
    "read": _schema(
        "read",
        "Read a file as text (office documents are converted). Lines are numbered; use "
        "offset (first line, 1-based) and limit (number of lines) for long files.",
        {"path": _S, "offset": _I, "limit": _I},
        ["path"],
    ),
    "glob": _schema(
        "glob",
        "List files matching a glob pattern, e.g. 'documents/**/*.docx'.",
        {"pattern": _S},
        ["pattern"],
    ),
    "grep": _schema(
        "grep",
        "Search files (office documents converted) for a regular expression; answers "
        "path:line: text. 'path' is a file or folder (default: the whole workspace).",
        {"pattern": _S, "path": _S, "glob": _S},
        ["pattern"],
    ),
    "write": _schema(
        "write",
        "Write a text file under output/ (created or replaced).",
        {"path": _S, "content": _S},
        ["path", "content"],
    ),
    "edit": _schema(
        "edit",
        "Replace one exact, unique occurrence of old_string with new_string in a file "
        "under output/.",
        {"path": _S, "old_string": _S, "new_string": _S},
        ["path", "old_string", "new_string"],
    ),
    "write_docx": _schema(
        "write_docx",
        "Write a Word document under output/ from Markdown (# headings, - bullets, "
        "| tables |, paragraphs).",
        {"path": _S, "markdown": _S},
        ["path", "markdown"],
    ),
    "bash": _schema(
        "bash",
        "Run a shell command in a sandbox without network; the workspace is the current "
        "folder (documents/ read-only, output/ writable).",
        {"command": _S},
        ["command"],
    ),
}


def markdown_to_docx(markdown: str, path: Path) -> None:
    """A .docx from simple Markdown (python-docx): headings, bullets, tables, paragraphs."""
    import docx

    document = docx.Document()
    table_rows: list[list[str]] = []

    def flush_table() -> None:
        rows = [r for r in table_rows if not all(re.fullmatch(r":?-{2,}:?", c) for c in r)]
        table_rows.clear()
        if not rows:
            return
        width = max(len(r) for r in rows)
        table = document.add_table(rows=len(rows), cols=width)
        for i, row in enumerate(rows):
            for j, cell in enumerate(row):
                table.cell(i, j).text = cell

    for line in markdown.splitlines():
        stripped = line.strip()
        if stripped.startswith("|") and stripped.endswith("|") and len(stripped) > 1:
            table_rows.append([c.strip() for c in stripped[1:-1].split("|")])
            continue
        flush_table()
        if not stripped:
            continue
        heading = re.match(r"(#{1,6})\s+(.*)", stripped)
        if heading:
            document.add_heading(heading.group(2), level=len(heading.group(1)))
        elif re.match(r"[-*]\s+", stripped):
            document.add_paragraph(stripped[2:].strip(), style="List Bullet")
        elif re.match(r"\d+[.)]\s+", stripped):
            document.add_paragraph(re.sub(r"^\d+[.)]\s+", "", stripped), style="List Number")
        else:
            document.add_paragraph(stripped)
    flush_table()
    document.save(str(path))


class Workspace:
    """One (model, task) workspace; ``call`` runs a tool and always returns text."""

    def __init__(self, root: Path, *, bash_binary: str | None = None) -> None:
        self.root = root.resolve()
        self.documents = self.root / "documents"
        self.output = self.root / "output"
        self.bash_binary = bash_binary
        self.read_documents: set[str] = set()
        self.deadline: float | None = None  # monotonic; bash commands end by it

    @classmethod
    def create(
        cls, root: Path, documents: Path | None, *, bash_binary: str | None = None
    ) -> Workspace:
        """A fresh workspace at ``root`` with copies of ``documents`` (made read-only)."""
        if root.exists():
            _make_writable(root)
            shutil.rmtree(root)
        (root / "output").mkdir(parents=True)
        target = root / "documents"
        if documents is not None:
            shutil.copytree(documents, target, symlinks=False)
        else:
            target.mkdir()
        for p in sorted(target.rglob("*"), reverse=True):
            p.chmod(0o444 if p.is_file() else 0o555)
        target.chmod(0o555)
        return cls(root, bash_binary=bash_binary)

    @property
    def tool_names(self) -> list[str]:
        names = ["read", "glob", "grep", "write", "edit", "write_docx"]
        return names + (["bash"] if self.bash_binary else [])

    def schemas(self) -> list[dict[str, Any]]:
        return [TOOL_SCHEMAS[n] for n in self.tool_names]

    def documents_present(self) -> list[str]:
        return sorted(
            p.relative_to(self.root).as_posix() for p in self.documents.rglob("*") if p.is_file()
        )

    def deliverables(self) -> list[str]:
        """Files under output/, relative to it."""
        return sorted(
            p.relative_to(self.output).as_posix()
            for p in self.output.rglob("*")
            if p.is_file() and not p.is_symlink()
        )

    # -- paths ------------------------------------------------------------------------------

    def resolve(self, name: object, *, writable: bool = False) -> Path:
        """The path ``name`` names inside the workspace; ToolError when it leads out."""
        if not isinstance(name, str) or not name.strip():
            raise ToolError("'path' must be a non-empty string")
        if "\0" in name:
            raise ToolError("a path cannot hold a NUL character")
        pure = PurePosixPath(name.strip())
        if pure.is_absolute() or name.startswith("\\") or re.match(r"^[A-Za-z]:", name):
            raise ToolError(
                f"{name!r}: absolute paths are refused; use a path relative to the workspace"
            )
        if ".." in pure.parts:
            raise ToolError(f"{name!r}: '..' is refused; paths stay inside the workspace")
        path = (self.root / pure).resolve()
        if path != self.root and self.root not in path.parents:
            raise ToolError(f"{name!r} leads outside the workspace (a symlink?) and is refused")
        if writable and path != self.output and self.output not in path.parents:
            raise ToolError(f"{name!r}: only files under output/ may be written")
        return path

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def text_of(self, path: Path) -> str:
        """A file's text, converted (cached by content in ``convert``)."""
        try:
            return to_text(path)
        except ConversionError as exc:
            raise ToolError(str(exc)) from None

    # -- tools ------------------------------------------------------------------------------

    def call(self, name: str, arguments: str) -> str:
        """Run tool ``name`` with its JSON ``arguments``: its result, or ``error: ...``."""
        tool: Callable[..., str] | None = getattr(self, f"tool_{name}", None)
        if tool is None or name not in self.tool_names:
            return f"error: unknown tool {name!r} (tools: {', '.join(self.tool_names)})"
        try:
            args = json.loads(arguments or "{}")
        except (ValueError, RecursionError):
            return "error: the arguments are not a JSON object"
        if not isinstance(args, dict):
            return "error: the arguments are not a JSON object"
        try:
            result = tool(**args)
        except ToolError as exc:
            return f"error: {exc}"
        except TypeError as exc:
            return f"error: bad arguments for {name}: {exc}"
        except OSError as exc:
            return f"error: {exc.strerror or exc}"
        except Exception as exc:  # a library's surprise (a glob pattern it rejects…): a turn
            return f"error: {name} failed: {type(exc).__name__}: {str(exc)[:300]}"
        if len(result) > MAX_RESULT_CHARS:
            result = result[:MAX_RESULT_CHARS] + (
                f"\n[... cut at {MAX_RESULT_CHARS} characters; use offset/limit]"
            )
        return result

    def tool_read(self, path: str, offset: int = 1, limit: int = MAX_READ_LINES) -> str:
        target = self.resolve(path)
        if not target.is_file():
            raise ToolError(f"{path!r} is not a file")
        if not isinstance(offset, int) or not isinstance(limit, int) or offset < 1 or limit < 1:
            raise ToolError("offset and limit must be positive integers")
        lines = self.text_of(target).splitlines()
        if target == self.documents or self.documents in target.parents:
            self.read_documents.add(self._rel(target))
        chosen = lines[offset - 1 : offset - 1 + min(limit, MAX_READ_LINES)]
        body = "\n".join(f"{offset + i:>6}\t{line}" for i, line in enumerate(chosen))
        more = len(lines) - (offset - 1 + len(chosen))
        return body + (
            f"\n[{more} more lines; read on with offset={offset + len(chosen)}]" if more > 0 else ""
        )

    def tool_glob(self, pattern: str) -> str:
        if not isinstance(pattern, str) or not pattern:
            raise ToolError("'pattern' must be a non-empty string")
        if PurePosixPath(pattern).is_absolute() or ".." in PurePosixPath(pattern).parts:
            raise ToolError("glob patterns are relative to the workspace, without '..'")
        found = [
            self._rel(p)
            for p in sorted(self.root.glob(pattern))
            if p.is_file() and self.root in p.resolve().parents
        ]
        if not found:
            return "no files match"
        return "\n".join(found[:MAX_GLOB]) + (
            f"\n[{len(found) - MAX_GLOB} more]" if len(found) > MAX_GLOB else ""
        )

    def tool_grep(self, pattern: str, path: str = ".", glob: str | None = None) -> str:
        try:
            regex = re.compile(pattern, re.IGNORECASE)
        except (re.error, TypeError, RecursionError, OverflowError) as exc:
            raise ToolError(f"bad regular expression: {exc}") from None
        base = self.resolve(path) if path not in ("", ".") else self.root
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        matches: list[str] = []
        for f in files:
            if self.root not in f.resolve().parents:
                continue
            rel = self._rel(f)
            if glob and not fnmatch.fnmatch(rel, glob) and not fnmatch.fnmatch(f.name, glob):
                continue
            try:
                text = self.text_of(f)
            except ToolError:
                continue
            for number, line in enumerate(text.splitlines(), start=1):
                if regex.search(line):
                    matches.append(f"{rel}:{number}: {line.strip()[:300]}")
                    if self.documents in f.parents:
                        self.read_documents.add(rel)  # a document it found words in
                    if len(matches) >= MAX_GREP_MATCHES:
                        return "\n".join(matches) + "\n[match limit reached]"
        return "\n".join(matches) or "no matches"

    def tool_write(self, path: str, content: str) -> str:
        target = self.resolve(path, writable=True)
        if not isinstance(content, str):
            raise ToolError("'content' must be a string")
        data = content.encode("utf-8")
        if len(data) > MAX_WRITE_BYTES:
            raise ToolError(f"content over {MAX_WRITE_BYTES} bytes")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return f"wrote {len(data)} bytes to {self._rel(target)}"

    def tool_edit(self, path: str, old_string: str, new_string: str) -> str:
        target = self.resolve(path, writable=True)
        if not target.is_file():
            raise ToolError(f"{path!r} does not exist; use write to create it")
        if target.suffix.lower() in (".docx", ".xlsx", ".pptx", ".pdf"):
            raise ToolError("edit works on text files; rewrite an office file with write_docx")
        text = target.read_text(encoding="utf-8", errors="replace")
        count = text.count(old_string) if old_string else 0
        if count != 1:
            raise ToolError(
                f"old_string occurs {count} times in {path!r}; it must occur exactly once"
            )
        target.write_text(text.replace(old_string, new_string), encoding="utf-8")
        return f"edited {self._rel(target)}"

    def tool_write_docx(self, path: str, markdown: str) -> str:
        target = self.resolve(path, writable=True)
        if target.suffix.lower() != ".docx":
            raise ToolError("write_docx writes a .docx file")
        if not isinstance(markdown, str) or len(markdown) > MAX_WRITE_BYTES:
            raise ToolError("'markdown' must be a string under 5 MiB")
        target.parent.mkdir(parents=True, exist_ok=True)
        markdown_to_docx(markdown, target)
        return f"wrote {self._rel(target)}"

    def tool_bash(self, command: str) -> str:
        if self.bash_binary is None:
            raise ToolError("bash is not available in this run")
        if not isinstance(command, str) or not command.strip():
            raise ToolError("'command' must be a non-empty string")
        left = 60.0 if self.deadline is None else min(60.0, self.deadline - time.monotonic())
        if left <= 0:
            raise ToolError("the task's deadline has passed")
        return run_sandboxed(self.bash_binary, self.root, command, left)


def _make_writable(root: Path) -> None:
    """Let a previous run's read-only documents be removed."""
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink():
            p.chmod(
                p.stat().st_mode | stat.S_IWUSR | stat.S_IXUSR
                if p.is_dir()
                else p.stat().st_mode | stat.S_IWUSR
            )

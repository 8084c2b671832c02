"""The agent's tools on a real workspace: conversion, confinement, read-only documents, bash."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from pipeline.eval.agent.convert import to_text
from pipeline.eval.agent.sandbox import probe
from pipeline.eval.agent.workspace import Workspace
from tests.eval.agent_helpers import EXAMPLE

PSA = EXAMPLE / "tasks/corporate/psa-term-sheet/documents"
NDA = EXAMPLE / "tasks/corporate/nda-review/documents"
BWRAP = probe("bwrap")


def args(**kw: object) -> str:
    return json.dumps(kw)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.create(tmp_path / "ws", PSA)


def test_office_documents_read_as_text(ws: Workspace) -> None:
    spa = ws.call("read", args(path="documents/draft-spa.docx"))
    assert "# Share Purchase Agreement (draft 3)" in spa
    assert "GBP 12,400,000" in spa and "## 2. Consideration" in spa
    cap = ws.call("read", args(path="documents/cap-table.xlsx"))
    assert "| Dana Okafor | 1400 | 14% | No - awaiting |" in cap
    assert ws.read_documents == {"documents/draft-spa.docx", "documents/cap-table.xlsx"}
    nda = to_text(NDA / "counterparty-nda.pdf")
    assert "ten (10) years" in nda
    email = to_text(NDA / "client-email.eml")
    assert "Subject: NDA with Solace Analytics" in email and "20 January" in email


def test_read_pages_with_offset_and_limit(ws: Workspace) -> None:
    first = ws.call("read", args(path="documents/draft-spa.docx", limit=2))
    assert first.splitlines()[0].strip().startswith("1\t# Share")
    assert "more lines; read on with offset=3" in first
    later = ws.call("read", args(path="documents/draft-spa.docx", offset=3, limit=1))
    assert later.splitlines()[0].lstrip().startswith("3\t")
    assert ws.call("read", args(path="documents/draft-spa.docx", offset=0)).startswith("error:")


@pytest.mark.parametrize(
    "path",
    ["../outside.txt", "documents/../../outside.txt", "/etc/passwd", "C:/x", ""],
)
def test_paths_that_leave_the_workspace_are_tool_errors(ws: Workspace, path: str) -> None:
    (ws.root.parent / "outside.txt").write_text("secret")
    for tool, extra in (("read", {}), ("write", {"content": "x"})):
        result = ws.call(tool, args(path=path, **extra))
        assert result.startswith("error: "), result
        assert "secret" not in result
    assert (ws.root.parent / "outside.txt").read_text() == "secret"


def test_a_symlink_out_is_refused(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    (ws.output / "link.txt").symlink_to(tmp_path / "secret.txt")
    (ws.output / "dir").symlink_to(tmp_path)
    assert "leads outside the workspace" in ws.call("read", args(path="output/link.txt"))
    assert "leads outside" in ws.call("write", args(path="output/dir/new.txt", content="x"))
    assert "secret" not in ws.call("grep", args(pattern="secret"))
    assert "secret" not in ws.call("glob", args(pattern="**/*"))
    assert not (tmp_path / "new.txt").exists()
    assert ws.deliverables() == []  # a link is not a deliverable


def test_a_symlinked_deliverable_is_never_sent_to_the_judge(ws: Workspace, tmp_path: Path) -> None:
    from pipeline.eval.agent.grade import deliverable_text, find_deliverable
    from pipeline.eval.agent.lab import load_agentic_suite

    (tmp_path / "secret.txt").write_text("host secret")
    (ws.output / "psa-term-sheet.docx").symlink_to(tmp_path / "secret.txt")
    task = next(t for t in load_agentic_suite(EXAMPLE).tasks if t.id.endswith("psa-term-sheet"))
    assert find_deliverable(ws.output, "psa-term-sheet.docx") is None
    got = deliverable_text(task, task.criteria[0], ws.output)
    assert got.missing == ["psa-term-sheet.docx"] and "host secret" not in got.text


def test_documents_are_read_only_and_only_output_is_written(ws: Workspace) -> None:
    before = (ws.documents / "draft-spa.docx").read_bytes()
    assert "only files under output/" in ws.call(
        "write", args(path="documents/draft-spa.docx", content="x")
    )
    assert "only files under output/" in ws.call("write", args(path="notes.txt", content="x"))
    assert (ws.documents / "draft-spa.docx").read_bytes() == before
    assert oct((ws.documents / "draft-spa.docx").stat().st_mode)[-3:] == "444"


def test_glob_grep_write_edit_and_write_docx(ws: Workspace) -> None:
    assert ws.call("glob", args(pattern="documents/*.xlsx")) == "documents/cap-table.xlsx"
    hits = ws.call("grep", args(pattern="long-stop|okafor"))
    assert "documents/draft-spa.docx:" in hits and "documents/cap-table.xlsx:" in hits
    assert ws.call("grep", args(pattern="(")).startswith("error: bad regular expression")
    assert ws.call("write", args(path="output/notes.md", content="price: TBD\n")).startswith(
        "wrote"
    )
    assert ws.call("edit", args(path="output/notes.md", old_string="TBD", new_string="12.4m"))
    assert (ws.output / "notes.md").read_text() == "price: 12.4m\n"
    assert "price: 12.4m" in ws.call("read", args(path="output/notes.md"))  # never a stale copy
    assert "occurs 0 times" in ws.call(
        "edit", args(path="output/notes.md", old_string="nope", new_string="x")
    )
    md = (
        "# Term sheet\n\n- Buyer: Harbor Lane\n\n"
        "| Item | Value |\n| --- | --- |\n| Price | GBP 12,400,000 |\n"
    )
    assert ws.call("write_docx", args(path="output/ts.docx", markdown=md)) == "wrote output/ts.docx"
    text = to_text(ws.output / "ts.docx")
    assert "# Term sheet" in text and "- Buyer: Harbor Lane" in text
    assert "| Price | GBP 12,400,000 |" in text
    assert ws.deliverables() == ["notes.md", "ts.docx"]


def test_bad_calls_are_tool_errors_not_exceptions(ws: Workspace) -> None:
    assert ws.call("delete", "{}").startswith("error: unknown tool 'delete'")
    assert ws.call("read", "{not json").startswith("error: the arguments are not a JSON object")
    assert ws.call("read", "[1]").startswith("error: the arguments are not a JSON object")
    assert ws.call("read", args(path="documents/none.docx")).startswith("error:")
    assert ws.call("read", args(file="x")).startswith("error: bad arguments for read")
    assert ws.call("bash", args(command="ls")).startswith("error: unknown tool 'bash'")
    assert ws.call("glob", args(pattern="**a")).startswith("error: glob failed: ValueError")
    (ws.output / "bad.docx").write_bytes(b"not a zip")
    assert ws.call("read", args(path="output/bad.docx")).startswith("error: bad.docx: cannot read")


def test_without_a_sandbox_bash_is_not_offered(tmp_path: Path) -> None:
    status = probe("no-such-bwrap-binary")
    assert not status.available and "not found" in status.reason
    ws = Workspace.create(tmp_path / "ws", PSA, bash_binary=None)
    assert "bash" not in ws.tool_names
    assert all(s["function"]["name"] != "bash" for s in ws.schemas())


@pytest.mark.skipif(not BWRAP.available, reason=f"bubblewrap cannot sandbox here: {BWRAP.reason}")
def test_bash_runs_sandboxed_without_network(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws", PSA, bash_binary=BWRAP.reason)
    assert "bash" in ws.tool_names
    listing = ws.call("bash", args(command="ls documents && echo made > output/made.txt"))
    assert listing.startswith("exit code 0") and "draft-spa.docx" in listing
    assert (ws.output / "made.txt").read_text() == "made\n"
    refused = ws.call("bash", args(command="echo x > documents/draft-spa.docx"))
    assert not refused.startswith("exit code 0")
    host_file = ws.call("bash", args(command="cat /etc/passwd"))  # no /etc in the sandbox
    assert not host_file.startswith("exit code 0") and "root:" not in host_file
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:  # a host port on loopback: the sandbox has its own, empty network namespace
        code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
        out = ws.call("bash", args(command=f'python3 -c "{code}"'))
    finally:
        server.close()
    assert not out.startswith("exit code 0"), out
    assert "Connection refused" in out or "Network is unreachable" in out


def test_pptx_and_unreadable_documents(tmp_path: Path) -> None:
    import pptx
    from pptx.util import Inches

    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[5])
    slide.shapes.title.text = "Deal timeline"
    box = slide.shapes.add_textbox(Inches(1), Inches(2), Inches(6), Inches(1))
    box.text_frame.text = "Signing 20 January; closing 31 March"
    deck.save(str(tmp_path / "deck.pptx"))
    text = to_text(tmp_path / "deck.pptx")
    assert "## Slide 1" in text and "Deal timeline" in text and "closing 31 March" in text
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    (tmp_path / "blob.bin").write_bytes(b"\0\1\2" * 100)
    ws = Workspace.create(tmp_path / "ws", None)
    for name in ("broken.pdf", "blob.bin"):
        (ws.output / name).write_bytes((tmp_path / name).read_bytes())
        assert ws.call("read", args(path=f"output/{name}")).startswith(f"error: {name}")

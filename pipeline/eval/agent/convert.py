"""Documents as text, through well-kept converters (never hand-written parsers).

``.docx`` → Markdown-ish text (python-docx: headings, paragraphs, tables), ``.xlsx`` → one
Markdown table per sheet (openpyxl, values not formulas), ``.pptx`` → text per slide
(python-pptx), ``.pdf`` → text per page (pypdfium2, Google's PDFium: pdfplumber's layout
analysis took 15x as long for the same text), ``.eml`` → headers and the plain-text body (the
standard library's ``email``), anything else → UTF-8 text when it is text. The agent's
``read`` tool and the grader both read through here, so the model and the judge see the same
words. Conversions are cached by content hash: every model and every rerun reads the same
documents, and an office parser costs tens of milliseconds per file.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uptake.errors import InputError

TEXT_SUFFIXES = {".txt", ".md", ".csv", ".json", ".html", ".htm", ".xml", ".yaml", ".yml", ""}


class ConversionError(InputError):
    """A document the converter cannot read (corrupt, encrypted, binary)."""


def _cells(row: Any) -> str:
    return "| " + " | ".join(("" if v is None else str(v)).replace("|", "\\|") for v in row) + " |"


def _table(rows: list[list[Any]]) -> str:
    if not rows:
        return ""
    width = max(len(r) for r in rows)
    rows = [list(r) + [None] * (width - len(r)) for r in rows]
    lines = [_cells(rows[0]), "| " + " | ".join(["---"] * width) + " |"]
    lines += [_cells(r) for r in rows[1:]]
    return "\n".join(lines)


def docx_to_text(path: Path) -> str:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    document = docx.Document(str(path))
    out: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            text = block.text.strip()
            if not text:
                continue
            style = (block.style.name if block.style is not None else "") or ""
            if style.startswith("Heading") and style[7:].strip().isdigit():
                out.append("#" * int(style[7:].strip()) + " " + text)
            elif style == "Title":
                out.append("# " + text)
            elif "List" in style:
                out.append("- " + text)
            else:
                out.append(text)
        elif isinstance(block, Table):
            out.append(_table([[c.text for c in row.cells] for row in block.rows]))
    return "\n\n".join(out)


def xlsx_to_text(path: Path) -> str:
    import openpyxl

    book = openpyxl.load_workbook(str(path), read_only=True, data_only=True)
    try:
        parts = []
        for sheet in book.worksheets:
            rows = [list(r) for r in sheet.iter_rows(values_only=True)]
            rows = [r for r in rows if any(v is not None for v in r)]
            parts.append(f"## Sheet: {sheet.title}\n\n{_table(rows)}")
        return "\n\n".join(parts)
    finally:
        book.close()


def pptx_to_text(path: Path) -> str:
    import pptx

    deck = pptx.Presentation(str(path))
    parts = []
    for number, slide in enumerate(deck.slides, start=1):
        texts = [
            shape.text_frame.text
            for shape in slide.shapes
            if shape.has_text_frame and shape.text_frame.text.strip()
        ]
        parts.append(f"## Slide {number}\n\n" + "\n\n".join(texts))
    return "\n\n".join(parts)


def pdf_to_text(path: Path) -> str:
    import pypdfium2 as pdfium  # type: ignore[import-untyped]  # the package ships no types

    pdf = pdfium.PdfDocument(str(path))
    try:
        pages = []
        for i, page in enumerate(pdf, start=1):
            textpage = page.get_textpage()
            text = textpage.get_text_range().replace("\r\n", "\n").strip()
            textpage.close()
            page.close()
            pages.append(f"## Page {i}\n\n{text}")
        return "\n\n".join(pages)
    finally:
        pdf.close()


def eml_to_text(path: Path) -> str:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    headers = [f"{h}: {message[h]}" for h in ("From", "To", "Cc", "Date", "Subject") if message[h]]
    body = message.get_body(preferencelist=("plain", "html"))
    text = body.get_content() if body is not None else ""
    attachments = [part.get_filename() or "(unnamed)" for part in message.iter_attachments()]
    tail = f"\n\nAttachments: {', '.join(attachments)}" if attachments else ""
    return "\n".join(headers) + "\n\n" + str(text).strip() + tail


def plain_text(path: Path) -> str:
    raw = path.read_bytes()
    if b"\0" in raw[:8192]:
        raise ConversionError(f"{path.name}: a binary file")
    return raw.decode("utf-8", errors="replace")


CONVERTERS: dict[str, Callable[[Path], str]] = {
    ".docx": docx_to_text,
    ".xlsx": xlsx_to_text,
    ".xlsm": xlsx_to_text,
    ".pptx": pptx_to_text,
    ".pdf": pdf_to_text,
    ".eml": eml_to_text,
}


_CACHE: OrderedDict[tuple[str, str], str] = OrderedDict()
_CACHE_ENTRIES = 512
_CACHE_LOCK = threading.Lock()


def import_converters() -> None:
    """Import the office libraries once, before the tasks start (about a second on a loaded
    machine that would otherwise land in the first task's first ``read``)."""
    import docx  # noqa: F401
    import openpyxl  # noqa: F401
    import pptx  # noqa: F401
    import pypdfium2  # noqa: F401


def clear_cache() -> None:
    """Forget every conversion (benchmarks measure the cold cost)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def to_text(path: Path) -> str:
    """The document's text; ConversionError when it cannot be read."""
    suffix = path.suffix.lower()
    key = (suffix, hashlib.sha256(path.read_bytes()).hexdigest())
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    convert = CONVERTERS.get(suffix, plain_text)
    try:
        text = convert(path)
    except ConversionError:
        raise
    except Exception as exc:  # each library has its own zoo of errors for a corrupt file
        raise ConversionError(
            f"{path.name}: cannot read as {path.suffix or 'text'}: {exc}"
        ) from exc
    with _CACHE_LOCK:
        _CACHE[key] = text
        while len(_CACHE) > _CACHE_ENTRIES:
            _CACHE.popitem(last=False)
    return text

# ruff: noqa: E501  (criteria texts are data: one line each reads best)
"""Write the example agentic suite: LAB-format tasks over generated office documents.

    python examples/legal-agentic/generate.py   # rewrites examples/legal-agentic/tasks/

Four small tasks in three practice areas, each reading .docx/.xlsx/.pdf/.eml documents and
leaving named deliverables, graded by 5–15 criteria in LAB's ``PASS if … FAIL if …`` form.
The facts are invented. Office files carry fixed timestamps, so regenerating gives the same
text; the suite hash (``uptake suite check``) covers the bytes actually committed.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import zipfile
from email.message import EmailMessage
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FIXED = dt.datetime(2026, 1, 5, 9, 0, 0)


def _fix_zip_times(path: Path) -> None:
    """Rewrite an office zip with fixed member timestamps (python-docx/openpyxl use now)."""
    with zipfile.ZipFile(path) as src:
        members = [(info, src.read(info.filename)) for info in src.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info, data in members:
            if info.filename == "docProps/core.xml":  # openpyxl stamps "modified" at save
                data = re.sub(
                    rb"(<dcterms:modified[^>]*>)[^<]*(<)",
                    rb"\g<1>" + FIXED.strftime("%Y-%m-%dT%H:%M:%SZ").encode() + rb"\g<2>",
                    data,
                )
            fixed = zipfile.ZipInfo(info.filename, date_time=FIXED.timetuple()[:6])
            fixed.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(fixed, data)


def docx(path: Path, title: str, blocks: list[Any]) -> None:
    import docx as python_docx

    document = python_docx.Document()
    document.core_properties.created = FIXED
    document.core_properties.modified = FIXED
    document.add_heading(title, level=1)
    for block in blocks:
        if isinstance(block, tuple) and block[0] == "h":
            document.add_heading(block[1], level=2)
        elif isinstance(block, list):
            table = document.add_table(rows=len(block), cols=len(block[0]))
            for i, row in enumerate(block):
                for j, cell in enumerate(row):
                    table.cell(i, j).text = str(cell)
        else:
            document.add_paragraph(block)
    document.save(str(path))
    _fix_zip_times(path)


def xlsx(path: Path, sheets: dict[str, list[list[Any]]]) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    book.properties.created = FIXED
    book.properties.modified = FIXED
    book.save(str(path))
    _fix_zip_times(path)


def pdf(path: Path, title: str, paragraphs: list[str]) -> None:
    from fpdf import FPDF

    doc = FPDF()
    doc.set_creation_date(FIXED.replace(tzinfo=dt.UTC))
    doc.add_page()
    doc.set_font("Helvetica", "B", 14)
    doc.multi_cell(0, 8, title)
    doc.set_font("Helvetica", size=11)
    for text in paragraphs:
        doc.ln(3)
        doc.multi_cell(0, 6, text)
    doc.output(str(path))


def eml(path: Path, sender: str, to: str, subject: str, body: str) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Date"] = "Mon, 05 Jan 2026 09:00:00 +0000"
    msg["Message-ID"] = f"<{path.stem}@example.test>"
    msg.set_content(body)
    path.write_bytes(bytes(msg))


def criteria(deliverable: str, *items: tuple[str, str]) -> list[dict[str, Any]]:
    """A task's criteria, numbered in order, each graded on the one ``deliverable``."""
    return [
        {"id": f"C-{i:03d}", "title": title, "match_criteria": match, "deliverables": [deliverable]}
        for i, (title, match) in enumerate(items, start=1)
    ]


def task(folder: Path, spec: dict[str, Any]) -> Path:
    (folder / "documents").mkdir(parents=True, exist_ok=True)
    (folder / "task.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return folder / "documents"


def psa_term_sheet(root: Path) -> None:
    docs = task(
        root / "corporate" / "psa-term-sheet",
        {
            "title": "Term sheet from a share purchase agreement",
            "instructions": (
                "Our client Harbor Lane Holdings is buying Cobalt Fabrication Ltd. Read the draft "
                "share purchase agreement and the cap table in documents/ and prepare a one-page "
                "term sheet for the partner: parties, price and how it is paid, the escrow, the "
                "long-stop date, governing law, and any seller shareholder whose consent is "
                "still missing.\n\nOutput: `psa-term-sheet.docx`"
            ),
            "deliverables": {"term_sheet": "psa-term-sheet.docx"},
            "work_type": "draft",
            "tags": ["M&A", "term sheet"],
            "difficulty": "easy",
            "criteria": criteria(
                "term_sheet",
                ("Names the buyer", "PASS if the buyer is Harbor Lane Holdings. FAIL otherwise."),
                (
                    "Names the target",
                    "PASS if the target is Cobalt Fabrication Ltd. FAIL otherwise.",
                ),
                (
                    "Purchase price",
                    "PASS if the price is stated as GBP 12,400,000. FAIL if missing or different.",
                ),
                (
                    "Escrow",
                    "PASS if it states 10% (GBP 1,240,000) held in escrow for 18 months. FAIL otherwise.",
                ),
                ("Long-stop date", "PASS if the long-stop date is 31 March 2026. FAIL otherwise."),
                ("Governing law", "PASS if governing law is England and Wales. FAIL otherwise."),
                (
                    "Missing consent",
                    "PASS if it flags that Dana Okafor (14% of shares) has not yet consented. FAIL if not flagged.",
                ),
            ),
        },
    )
    docx(
        docs / "draft-spa.docx",
        "Share Purchase Agreement (draft 3)",
        [
            "This agreement is made between Meridian Founders LLP and the other sellers listed in "
            "Schedule 1 (the Sellers) and Harbor Lane Holdings Limited (the Buyer) for the entire "
            "issued share capital of Cobalt Fabrication Ltd (the Company).",
            ("h", "2. Consideration"),
            "2.1 The consideration is GBP 12,400,000, payable in cash at Completion.",
            "2.2 An amount equal to 10% of the consideration (GBP 1,240,000) shall be paid into "
            "escrow and held for 18 months after Completion against warranty claims.",
            ("h", "5. Conditions"),
            "5.3 If the Conditions are not satisfied by 31 March 2026 (the Long-stop Date), either "
            "party may terminate this agreement.",
            ("h", "14. Governing law"),
            "This agreement is governed by the laws of England and Wales.",
        ],
    )
    xlsx(
        docs / "cap-table.xlsx",
        {
            "Shareholders": [
                ["Shareholder", "Shares", "Percent", "Consent to sale"],
                ["Meridian Founders LLP", 5800, "58%", "Yes"],
                ["Priya Raman", 2800, "28%", "Yes"],
                ["Dana Okafor", 1400, "14%", "No - awaiting"],
            ]
        },
    )


def nda_review(root: Path) -> None:
    docs = task(
        root / "corporate" / "nda-review",
        {
            "title": "Review an inbound NDA against the playbook",
            "instructions": (
                "A counterparty sent us their mutual NDA. Review it against our NDA playbook and "
                "the client's email, and write an issues list: each clause that departs from the "
                "playbook, what the playbook requires, and a proposed redline.\n\n"
                "Output: `nda-issues.md`"
            ),
            "deliverables": {"issues": "nda-issues.md"},
            "work_type": "review",
            "tags": ["NDA", "playbook"],
            "criteria": criteria(
                "issues",
                (
                    "Term",
                    "PASS if it flags the 10-year confidentiality term against the playbook's 3-year maximum. FAIL otherwise.",
                ),
                (
                    "Non-solicit",
                    "PASS if it flags the 24-month non-solicitation clause as not permitted by the playbook. FAIL otherwise.",
                ),
                (
                    "Governing law",
                    "PASS if it flags New York law against the playbook's English law requirement. FAIL otherwise.",
                ),
                (
                    "Residuals",
                    "PASS if it flags the residuals clause as to be deleted. FAIL otherwise.",
                ),
                (
                    "Client priority",
                    "PASS if it notes the client's instruction that signing is needed by 20 January. FAIL otherwise.",
                ),
                (
                    "Redlines",
                    "PASS if each flagged issue has a proposed replacement wording. FAIL if any flagged issue lacks one.",
                ),
            ),
        },
    )
    pdf(
        docs / "counterparty-nda.pdf",
        "Mutual Non-Disclosure Agreement",
        [
            "1. Term. The obligations of confidentiality survive for ten (10) years from disclosure.",
            "4. Residuals. Either party may use information retained in the unaided memory of its personnel.",
            "6. Non-solicitation. For twenty-four (24) months neither party shall solicit the other's employees.",
            "9. Governing law. This Agreement is governed by the laws of the State of New York.",
        ],
    )
    docx(
        docs / "nda-playbook.docx",
        "NDA playbook",
        [
            [
                ["Topic", "Position"],
                ["Term", "At most 3 years of confidentiality"],
                ["Residuals", "Not accepted: delete"],
                ["Non-solicitation", "Not accepted in an NDA"],
                ["Governing law", "English law, courts of England"],
            ]
        ],
    )
    eml(
        docs / "client-email.eml",
        "gc@northwind.example",
        "us@firm.example",
        "NDA with Solace Analytics",
        "Please turn this around quickly: we need the NDA signed by 20 January so the data room "
        "can open. Apply the usual playbook.",
    )


def severance(root: Path) -> None:
    docs = task(
        root / "employment" / "severance-calc",
        {
            "title": "Severance entitlements of three employees",
            "instructions": (
                "Using the employee data and the severance policy, compute each employee's "
                "severance (weeks and amount) and note anything that needs the partner's "
                "attention.\n\nOutput: `severance-memo.md`"
            ),
            "deliverables": {"memo": "severance-memo.md"},
            "work_type": "analyze",
            "tags": ["employment", "severance"],
            "criteria": criteria(
                "memo",
                ("A. Mensah weeks", "PASS if A. Mensah gets 12 weeks. FAIL otherwise."),
                ("A. Mensah amount", "PASS if A. Mensah's severance is 18,000. FAIL otherwise."),
                ("B. Liu weeks", "PASS if B. Liu gets 4 weeks (minimum). FAIL otherwise."),
                ("B. Liu amount", "PASS if B. Liu's severance is 5,000. FAIL otherwise."),
                ("C. Novak cap", "PASS if C. Novak's weeks are capped at 26. FAIL otherwise."),
                ("C. Novak amount", "PASS if C. Novak's severance is 52,000. FAIL otherwise."),
                (
                    "Release",
                    "PASS if it notes payment is conditional on a signed release. FAIL otherwise.",
                ),
                ("Flag", "PASS if it flags that C. Novak is on protected leave. FAIL otherwise."),
            ),
        },
    )
    xlsx(
        docs / "employees.xlsx",
        {
            "Employees": [
                ["Name", "Years of service", "Weekly pay", "Status"],
                ["A. Mensah", 6, 1500, "active"],
                ["B. Liu", 1, 1250, "active"],
                ["C. Novak", 15, 2000, "on parental leave (protected)"],
            ]
        },
    )
    docx(
        docs / "severance-policy.docx",
        "Severance policy",
        [
            "Severance is two weeks of pay per full year of service, with a minimum of four weeks "
            "and a maximum of twenty-six weeks.",
            "Payment is conditional on the employee signing a general release.",
        ],
    )


def limitation(root: Path) -> None:
    docs = task(
        root / "litigation" / "limitation-check",
        {
            "title": "Limitation period check for a contract claim",
            "instructions": (
                "The client asks whether it can still sue for the unpaid invoices. Read the "
                "correspondence and the invoice schedule and write a short advice note: which "
                "invoices are time-barred under a six-year limitation period as of 5 January "
                "2026, which are not, and the latest date to issue proceedings for the rest.\n\n"
                "Output: `limitation-note.docx`"
            ),
            "deliverables": {"note": "limitation-note.docx"},
            "work_type": "analyze",
            "tags": ["limitation", "contract"],
            "criteria": criteria(
                "note",
                (
                    "INV-101 barred",
                    "PASS if INV-101 (due 2 December 2019) is time-barred. FAIL otherwise.",
                ),
                (
                    "INV-117 not barred",
                    "PASS if INV-117 (due 15 March 2020) is not time-barred. FAIL otherwise.",
                ),
                (
                    "INV-130 not barred",
                    "PASS if INV-130 (due 30 June 2021) is not time-barred. FAIL otherwise.",
                ),
                (
                    "Deadline",
                    "PASS if it gives 15 March 2026 as the latest date to issue for INV-117. FAIL otherwise.",
                ),
                (
                    "Acknowledgment",
                    "PASS if it considers whether the debtor's 2024 email acknowledged the debt. FAIL otherwise.",
                ),
            ),
        },
    )
    xlsx(
        docs / "invoices.xlsx",
        {
            "Invoices": [
                ["Invoice", "Amount", "Due date"],
                ["INV-101", 8200, "2019-12-02"],
                ["INV-117", 12650, "2020-03-15"],
                ["INV-130", 4400, "2021-06-30"],
            ]
        },
    )
    eml(
        docs / "debtor-email.eml",
        "accounts@brightwater.example",
        "credit@client.example",
        "Re: overdue invoices",
        "We are reviewing the older invoices and hope to propose a payment plan next quarter.\n"
        "Sent 12 April 2024.",
    )


def main() -> None:
    root = HERE / "tasks"
    if root.exists():
        shutil.rmtree(root)
    for build in (psa_term_sheet, nda_review, severance, limitation):
        build(root)
    print(f"wrote {sum(1 for _ in root.rglob('task.json'))} tasks under {root}")


if __name__ == "__main__":
    main()

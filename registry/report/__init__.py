"""The adoption report: one registered model version's story, from release to serving.

``uptake report`` (``registry.report.cli``) gathers a version from MLflow (``gather``),
draws its plots (``plots``) and writes a self-contained HTML page and a Markdown twin
(``render``); the same plots go to the version's MLflow run under ``report/``.
``write_summary`` renders the adoption table of every version (the demo's closing table).
"""

from __future__ import annotations

from registry.report.gather import gather_version, summary_rows
from registry.report.model import ReportError, Row, VersionReport
from registry.report.render import summary_markdown
from registry.report.write import ReportFiles, write_all, write_summary, write_version
from uptake.cost import Price

__all__ = [
    "Price",
    "ReportError",
    "ReportFiles",
    "Row",
    "VersionReport",
    "gather_version",
    "summary_markdown",
    "summary_rows",
    "write_all",
    "write_summary",
    "write_version",
]

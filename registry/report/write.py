"""Write reports to disk and their plots to the version's MLflow run (``report/``)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from mlflow.exceptions import MlflowException
from pydantic import BaseModel

from registry.mlflow_registry import Registry
from registry.report.gather import gather_version, summary_rows
from registry.report.model import ReportError
from registry.report.plots import plots
from registry.report.render import render_html, render_markdown, summary_html, summary_markdown
from uptake.cost import Price

log = logging.getLogger(__name__)
REPORT_ARTIFACT_DIR = "report"
HTML_FILE, MD_FILE = "report.html", "report.md"


class ReportFiles(BaseModel):
    html: Path
    markdown: Path
    plots: list[Path]
    logged_to_mlflow: bool


def write_version(
    reg: Registry,
    model: str,
    version: str | None,
    out: Path,
    *,
    price: Price | None = None,
    log_artifacts: bool = True,
) -> ReportFiles:
    """Gather ``model`` v``version`` (default: latest), write ``out``/report.html + .md + PNGs,
    and log the same files to the run under ``report/``."""
    report = gather_version(reg, model, version, price)
    images = plots(report)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, png in images.items():
        path = out / name
        path.write_bytes(png)
        paths.append(path)
    html_path = out / HTML_FILE
    md_path = out / MD_FILE
    html_path.write_text(render_html(report, images), encoding="utf-8")
    md_path.write_text(render_markdown(report, images), encoding="utf-8")
    logged = False
    if log_artifacts:
        try:
            with tempfile.TemporaryDirectory(prefix="uptake-report-") as tmp:
                for path in (*paths, html_path, md_path):
                    (Path(tmp) / path.name).write_bytes(path.read_bytes())
                reg.client.log_artifacts(report.run_id, tmp, REPORT_ARTIFACT_DIR)
            logged = True
        except (MlflowException, OSError) as exc:  # the files on disk are the report
            log.warning("could not log the report to run %s: %s", report.run_id, exc)
    return ReportFiles(html=html_path, markdown=md_path, plots=paths, logged_to_mlflow=logged)


def write_summary(
    reg: Registry, model: str, out: Path, links: dict[str, str] | None = None
) -> tuple[Path, Path]:
    """``out``/index.html and index.md: the adoption table of every version of ``model``."""
    rows, skipped = summary_rows(reg, model)
    if not rows:
        raise ReportError(
            f"registered model {model} has no reportable versions"
            + (f" ({skipped[0]})" if skipped else "")
        )
    out.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out / "index.html", out / "index.md"
    html_path.write_text(summary_html(model, rows, skipped, links), encoding="utf-8")
    md_path.write_text(summary_markdown(model, rows, skipped), encoding="utf-8")
    return html_path, md_path


def write_all(
    reg: Registry, model: str, out: Path, *, price: Price | None = None, log_artifacts: bool = True
) -> tuple[Path, dict[str, ReportFiles]]:
    """A page per reportable version under ``out``/v<N>/, and the summary as ``out``/index.html."""
    written: dict[str, ReportFiles] = {}
    for mv in sorted(reg.versions(model), key=lambda v: int(v.version)):
        try:
            written[str(mv.version)] = write_version(
                reg,
                model,
                str(mv.version),
                out / f"v{mv.version}",
                price=price,
                log_artifacts=log_artifacts,
            )
        except ReportError as exc:
            log.info("skipping %s v%s: %s", model, mv.version, exc)
    links = {v: f"v{v}/{HTML_FILE}" for v in written}
    index, _ = write_summary(reg, model, out, links)
    return index, written

"""The adoption report in a real browser: Debian's chromium opens the HTML file as a person
would; the table must render with its cells, every plot must load (naturalWidth > 0), and the
page must ask the network for nothing (it is self-contained)."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from registry.mlflow_registry import Registry
from registry.report import Price, write_version
from tests.registry.test_report import TIMELINE, Adoptions, adoptions  # noqa: F401 (fixture)


def test_report_renders_in_a_browser(
    adoptions: Adoptions,  # noqa: F811 (the imported fixture)
    browser_page: Page,
    screenshot_dir: Path,
    tmp_path: Path,
) -> None:
    reg = Registry(adoptions.server.tracking_uri)
    files = write_version(
        reg, adoptions.model, "1", tmp_path, price=Price(gpu_hour=3.6), log_artifacts=False
    )
    page = browser_page
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(files.html.as_uri())

    expect(page.locator("h1")).to_contain_text(f"{adoptions.model} v1")
    headers = page.locator("#adoption thead th").all_inner_texts()
    assert headers[1:] == [
        "release",
        "base all-pass",
        "base criterion",
        "post-trained all-pass",
        "post-trained criterion",
        "decision",
        "release → serving",
    ]
    cells = page.locator("#adoption tbody tr").first.locator("td").all_inner_texts()
    assert cells[:7] == ["v1", adoptions.release_v1, "20.0%", "36.7%", "40.0%", "63.3%", "promoted"]
    assert cells[7] != "—"
    steps = page.locator("#timeline tbody tr td:first-child").all_inner_texts()
    assert steps == TIMELINE
    expect(page.locator("#checks tbody tr")).not_to_have_count(0)

    plots = page.locator("img.plot")
    expect(plots).to_have_count(3)
    widths = page.evaluate(
        "() => Promise.all([...document.images].map(i => i.decode().then(() => i.naturalWidth)))"
    )
    assert len(widths) == 3 and all(w > 0 for w in widths), widths
    assert all(u.startswith(("file:", "data:")) for u in requests), requests

    page.set_viewport_size({"width": 1100, "height": 1400})
    page.screenshot(path=str(screenshot_dir / "report.png"))
    assert (screenshot_dir / "report.png").stat().st_size > 10_000

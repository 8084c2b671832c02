"""Browser fixtures: Debian's chromium driven by Playwright (no browser download).

- ``browser``: one headless chromium for the session (launching costs ~1 s of CPU per start).
- ``browser_page``: a fresh context and page per test, so cookies and storage never leak.
- ``screenshot_dir``: where a test writes its screenshots — ``UPTAKE_SCREENSHOTS_DIR`` when
  set (docs/img is refreshed that way), otherwise the test's tmp dir.

The tests skip only when the browser is missing and ``UPTAKE_REQUIRE_BROWSER`` is unset; CI
(``.ci/run``) sets it, so a missing browser fails there instead of silently skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

BROWSER_ENV = "UPTAKE_BROWSER_EXECUTABLE"
REQUIRE_ENV = "UPTAKE_REQUIRE_BROWSER"
SCREENSHOTS_ENV = "UPTAKE_SCREENSHOTS_DIR"
DEFAULT_EXECUTABLE = "/usr/bin/chromium"
# A busy 2-core CI machine serves MLflow's multi-megabyte UI bundle slowly; Playwright's defaults
# (30 s per action, 5 s per expect) fail there while a person would just wait.
ACTION_TIMEOUT_MS = 60_000
EXPECT_TIMEOUT_MS = 30_000


def chromium_executable() -> Path:
    return Path(os.environ.get(BROWSER_ENV) or DEFAULT_EXECUTABLE)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One browser per test module, not per session: Playwright's sync API keeps an asyncio
    loop running in the main thread while it is started, so a later test module in the same
    xdist worker that calls ``asyncio.run`` would fail ("cannot be called from a running event
    loop"). Stopping it after each browser module gives the thread back."""
    executable = chromium_executable()
    if not (executable.is_file() and os.access(executable, os.X_OK)):
        message = (
            f"no browser at {executable}: install it with `sudo apt-get install -y chromium` "
            f"(or set {BROWSER_ENV})"
        )
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{message}; {REQUIRE_ENV} is set, so browser tests must run")
        pytest.skip(message)
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=str(executable),
            headless=True,
            # root in containers needs --no-sandbox; /dev/shm is often 64 MB there
            args=["--no-sandbox", "--disable-dev-shm-usage", "--headless=new"],
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def browser_page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Path:
    configured = os.environ.get(SCREENSHOTS_ENV)
    target = Path(configured) if configured else tmp_path / "screenshots"
    target.mkdir(parents=True, exist_ok=True)
    return target

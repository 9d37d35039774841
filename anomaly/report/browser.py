"""Debian's Chromium, driven by Playwright: how the report's tests and benchmark read it.

Playwright (a test extra) is pointed at the installed executable and never downloads a
browser. ``make test`` installs Debian's ``chromium`` when it is missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def chromium_path() -> str:
    """The Chromium executable (``ANOMALY_CHROMIUM`` overrides the search).

    Raises:
        RuntimeError: None is installed (``make test`` installs Debian's ``chromium``).
    """
    found = os.environ.get("ANOMALY_CHROMIUM") or shutil.which("chromium")
    for candidate in (found, "/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if candidate and Path(candidate).is_file():
            return candidate
    raise RuntimeError(
        "no Chromium found to read the report with: run `make test` (it installs Debian's "
        "chromium) or set ANOMALY_CHROMIUM to the executable"
    )


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser (Playwright's ``Browser``)."""
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()

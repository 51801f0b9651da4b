"""Headless Chromium for the portal's browser tests: the system's Chromium, driven by Playwright.

Playwright's own browser downloads are not used: Debian's ``chromium`` package is launched by
path. Without it (or without Playwright) ``BROWSER_MISSING`` says why, and the browser tests are
reported as not run.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

CHROMIUM = os.environ.get("WALHOOK_TEST_CHROMIUM", "/usr/bin/chromium")


def _missing() -> str | None:
    if not os.access(CHROMIUM, os.X_OK):
        return f"browser tests not run: no Chromium at {CHROMIUM} (apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "browser tests not run: the playwright package is not installed (pip install -e '.[dev]')"
    return None


BROWSER_MISSING = _missing()


@asynccontextmanager
async def launch() -> AsyncIterator[Any]:
    """One headless browser; contexts opened from it are separate users (their own cookies)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-background-networking"])
        try:
            yield browser
        finally:
            await browser.close()

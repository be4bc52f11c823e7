"""Browser fixtures: a headless system Chromium driven by Playwright.

Playwright's own browser download is not used (CI cannot fetch it); the
distribution's Chromium is (``apt-get install -y chromium``).  A missing browser
fails the test rather than skipping it, so CI cannot go green without running it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM_ENV = "HERALD_TEST_CHROMIUM"


def chromium_path() -> str:
    found = os.environ.get(CHROMIUM_ENV) or next(
        (p for name in ("chromium", "chromium-browser") if (p := shutil.which(name))), None
    )
    if not found:
        pytest.fail(
            "Chromium is needed for the browser tests and was not found on PATH: "
            f"install it (apt-get install -y chromium) or set {CHROMIUM_ENV} to its path"
        )
    return found


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield launched
        finally:
            await launched.close()

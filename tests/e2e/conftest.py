"""Browser fixtures: a headless system Chromium driven by Playwright, and one real
``herald serve`` shared by every browser test of the session.

Playwright's own browser download is not used (CI cannot fetch it); the
distribution's Chromium is (``apt-get install -y chromium``).  A missing browser
fails the test rather than skipping it, so CI cannot go green without running it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser, async_playwright

from herald.api.auth import Authenticator
from herald.journal.base import JournalLimits
from herald.journal.redis import RedisJournal
from herald.journal.runtime.settings import Settings
from tests.conftest import REDIS_URL
from tests.e2e.http_proxy import FaultyHttpProxy
from tests.servers import TEST_SECRET, HeraldProcess

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


class Deadline:
    """One time budget shared by every wait of a test, so a hang fails with a message
    about what was awaited rather than pytest's bare timeout."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def ms(self) -> float:
        return self.s() * 1000

    def s(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise AssertionError("the test's time budget ran out")
        return left


@contextlib.asynccontextmanager
async def launched() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launched() as browser:
        yield browser


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeraldProcess]:
    """One server for all browser tests (starting one is most of their cost).  Tests
    isolate themselves by user name; the restart test leaves it running again."""
    proc = HeraldProcess(
        tmp_path_factory.mktemp("herald"),
        # A short retry: so a dropped stream is reopened within a fraction of a second.
        HERALD_RETRY_MS="300",
        HERALD_MAX_CONNECTIONS_PER_USER="8",
    )
    proc.start(timeout=90)
    try:
        yield proc
    finally:
        proc.stop(signal.SIGKILL)


@pytest.fixture(scope="session")
def mint() -> Callable[[str], str]:
    """Tokens for the test server, signed in this process (``herald token`` would
    start a Python process per token)."""
    auth = Authenticator(Settings(jwt_secret=TEST_SECRET, redis_url="memory://"))
    return lambda user: auth.issue(user)


@pytest.fixture
async def journal() -> AsyncIterator[RedisJournal]:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        yield RedisJournal(client, JournalLimits())
    finally:
        await client.aclose()


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def proxy(server: HeraldProcess) -> AsyncIterator[FaultyHttpProxy]:
    """An HTTP proxy in front of the server that answers with faults on demand."""
    started = await FaultyHttpProxy(server.port).start()
    try:
        yield started
    finally:
        await started.aclose()

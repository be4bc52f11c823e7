"""The live page in a real browser, across a server restart.

What it proves: the page connects with a single-use ticket, and when the server
restarts the browser's own EventSource reconnect (same URL, spent ticket, the
stream-session cookie bound to that ticket, ``Last-Event-ID``) is let back in and
resumes exactly where it stopped — events 1..100 once each, in order, no gap —
without the page fetching a new ticket.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser, Page, Request

from herald.api.tickets import stream_cookie_name
from herald.journal.base import JournalLimits
from herald.journal.positions import Target
from herald.journal.redis import RedisJournal
from tests.conftest import REDIS_URL
from tests.servers import HeraldProcess

pytestmark = pytest.mark.integration

N = 50
TYPE = "demo.seq"
# Every wait shares one budget, under pytest's 120 s timeout, so a hang fails with
# a message about what was awaited rather than a bare timeout.
BUDGET_S = 90.0


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def ms(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise AssertionError("the test's time budget ran out")
        return left * 1000


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[HeraldProcess]:
    # A short retry: so the browser reconnects within a fraction of a second.
    proc = HeraldProcess(tmp_path, HERALD_RETRY_MS="300")
    # start/stop block on a subprocess; keep them off the loop Playwright runs on.
    await asyncio.to_thread(proc.start)
    try:
        yield proc
    finally:
        await asyncio.to_thread(proc.stop, signal.SIGKILL)


@pytest.fixture
async def journal() -> AsyncIterator[RedisJournal]:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        yield RedisJournal(client, JournalLimits())
    finally:
        await client.aclose()


async def text_of(page: Page, selector: str) -> str:
    return (await page.text_content(selector)) or ""


async def wait_for_text(page: Page, element_id: str, expected: str, deadline: Deadline) -> None:
    """Wait until the element with ``element_id`` reads ``expected``; say what it read if not."""
    try:
        await page.wait_for_function(
            "([id, text]) => document.getElementById(id).textContent === text",
            arg=[element_id, expected],
            timeout=deadline.ms(),
        )
    except Exception as e:
        state, count = await text_of(page, "#state"), await text_of(page, "#count")
        raise AssertionError(
            f"#{element_id} never read {expected!r} (state {state!r}, {count} events shown)"
        ) from e


async def test_live_page_resumes_across_server_restart(
    browser: Browser, server: HeraldProcess, journal: RedisJournal, unique: str
) -> None:
    deadline = Deadline(BUDGET_S)
    target = Target.user(unique)
    token = await asyncio.to_thread(server.token, unique)

    page = await browser.new_page()
    requests: list[Request] = []
    page.on("request", lambda r: requests.append(r))
    page_errors: list[str] = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))

    await page.goto(f"{server.url}/?token={token}", timeout=deadline.ms())
    await page.click("#connect", timeout=deadline.ms())
    await wait_for_text(page, "state", "open", deadline)

    for i in range(1, N + 1):
        await journal.publish(target, TYPE, {"n": i})
    await wait_for_text(page, "count", str(N), deadline)
    cursor_before = await text_of(page, "#cursor")
    # Before the restart the page has opened exactly one stream; any later one is a reconnect.
    first_stream_requests = sum(1 for r in requests if "/api/events?" in r.url)

    # stop() + start() is restart() with publishes in between: half of the second
    # batch lands while no server runs (must be replayed from the journal after the
    # reconnect), half after it is back (replay or live, whichever the browser meets).
    await asyncio.to_thread(server.stop)
    for i in range(N + 1, N + N // 2 + 1):
        await journal.publish(target, TYPE, {"n": i})
    await asyncio.to_thread(server.start)
    for i in range(N + N // 2 + 1, 2 * N + 1):
        await journal.publish(target, TYPE, {"n": i})
    await wait_for_text(page, "count", str(2 * N), deadline)

    ns = await page.eval_on_selector_all("#rows tr", "rows => rows.map(r => r.dataset.n)")
    assert ns == [str(i) for i in range(1, 2 * N + 1)], "events missing, repeated or reordered"
    types = await page.eval_on_selector_all("#rows tr", "rows => rows.map(r => r.dataset.type)")
    assert "herald.gap" not in types
    assert set(types) == {TYPE}
    assert await text_of(page, "#gaps") == "0"
    kept: list[dict[str, object]] = await page.evaluate("window.heraldEvents")
    assert len({e["id"] for e in kept}) == 2 * N, "duplicate envelope ids"

    assert await text_of(page, "#state") == "open"
    assert int(await text_of(page, "#reconnects")) >= 1

    tickets = [r for r in requests if r.method == "POST" and r.url.endswith("/api/events/ticket")]
    assert len(tickets) == 1, "the page fetched a new ticket; EventSource should reconnect alone"

    # The browser reconnected on its own: the very same URL, spent ticket included.
    streams = [r for r in requests if "/api/events?" in r.url]
    assert first_stream_requests == 1
    reconnects = streams[1:]
    assert reconnects, "no reconnect request was seen"
    assert all(r.url == streams[0].url for r in reconnects)
    assert "last_event_id=" not in streams[0].url
    assert "last-event-id" not in await streams[0].all_headers()
    # Attempts refused while the server was down expose no sent headers; the ones
    # that reached it must carry the cursor of the last event shown and the cookie.
    ticket = parse_qs(urlsplit(streams[0].url).query)["ticket"][0]
    cookie_name = stream_cookie_name(ticket)
    answered = 0
    for r in reconnects:
        response = await r.response()
        if response is None:
            continue
        answered += 1
        assert response.status == 200
        sent = await r.all_headers()
        assert sent.get("last-event-id") == cursor_before
        assert f"{cookie_name}=" in sent.get("cookie", "")
    assert answered >= 1, "no reconnect reached the restarted server"

    # What let the spent-ticket reconnect in: an HttpOnly cookie scoped to the stream.
    cookies = {c["name"]: c for c in await page.context.cookies()}
    session = cookies.get(cookie_name)
    assert session is not None, "the ticket connection set no stream-session cookie"
    assert session["httpOnly"] is True
    assert session["path"] == "/api/events"

    assert page_errors == []

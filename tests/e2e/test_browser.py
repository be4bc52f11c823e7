"""The live page in a real browser, across a server restart.

What it proves: the page connects by itself with the token it was opened with
(sent in a header, never in a URL), and when the server restarts, herald.js
reconnects with ``Last-Event-ID`` and resumes exactly where it stopped — events
1..100 once each, in order, no gap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from playwright.async_api import Browser, Page, Request

from herald.journal.positions import Target
from herald.journal.redis import RedisJournal
from tests.e2e.conftest import Deadline
from tests.servers import HeraldProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

N = 50
TYPE = "demo.seq"
# Every wait shares one budget, under pytest's 120 s timeout.
BUDGET_S = 90.0


async def text_of(page: Page, selector: str) -> str:
    return (await page.text_content(selector)) or ""


async def wait_for_text(page: Page, element_id: str, expected: str, deadline: Deadline) -> None:
    """Wait until the element with ``element_id`` reads ``expected``; say what it read if not."""
    try:
        await page.wait_for_function(
            "([id, text]) => document.getElementById(id)?.textContent === text",
            arg=[element_id, expected],
            timeout=deadline.ms(),
        )
    except Exception as e:
        state, count = await text_of(page, "#state"), await text_of(page, "#count")
        raise AssertionError(
            f"#{element_id} never read {expected!r} (state {state!r}, {count} events shown)"
        ) from e


async def test_live_page_resumes_across_server_restart(
    browser: Browser,
    server: HeraldProcess,
    journal: RedisJournal,
    mint: Callable[[str], str],
    unique: str,
) -> None:
    deadline = Deadline(BUDGET_S)
    target = Target.user(unique)
    token = mint(unique)

    page = await browser.new_page()
    requests: list[Request] = []
    page.on("request", lambda r: requests.append(r))
    page_errors: list[str] = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))

    # A token in the URL: the page connects by itself, then drops it from the address.
    await page.goto(f"{server.url}/?token={token}", timeout=deadline.ms())
    await wait_for_text(page, "state", "open", deadline)
    assert "token=" not in page.url

    for i in range(1, N + 1):
        await journal.publish(target, TYPE, {"n": i})
    await wait_for_text(page, "count", str(N), deadline)
    cursor_before = await text_of(page, "#cursor")
    # Before the restart the page has opened exactly one stream; any later one is a reconnect.
    first_stream_requests = sum(1 for r in requests if "/api/events" in r.url)

    # stop() + start() is restart() with publishes in between: half of the second
    # batch lands while no server runs (must be replayed from the journal after the
    # reconnect), half after it is back (replay or live, whichever the browser meets).
    await asyncio.to_thread(server.stop)
    for i in range(N + 1, N + N // 2 + 1):
        await journal.publish(target, TYPE, {"n": i})
    await asyncio.to_thread(server.start, 90)
    for i in range(N + N // 2 + 1, 2 * N + 1):
        await journal.publish(target, TYPE, {"n": i})
    await wait_for_text(page, "count", str(2 * N), deadline)

    ns = await page.eval_on_selector_all("#rows tr", "rows => rows.map(r => r.dataset.n)")
    assert ns == [str(i) for i in range(1, 2 * N + 1)], "events missing, repeated or reordered"
    types = await page.eval_on_selector_all("#rows tr", "rows => rows.map(r => r.dataset.type)")
    assert "herald.gap" not in types
    assert set(types) == {TYPE}
    streams = await page.eval_on_selector_all("#rows tr", "rows => rows.map(r => r.dataset.stream)")
    assert set(streams) == {f"user:{unique}"}, "each row names the stream it came from"
    assert await text_of(page, "#gaps") == "0"
    kept: list[dict[str, object]] = await page.evaluate("window.heraldEvents")
    assert len({e["id"] for e in kept}) == 2 * N, "duplicate envelope ids"

    assert await text_of(page, "#state") == "open"
    assert int(await text_of(page, "#reconnects")) >= 1

    # The stream is read with fetch(): the token travels in a header, never in a URL,
    # and every reconnect sends the cursor of the last event shown.
    opened = [r for r in requests if r.url.startswith(f"{server.url}/api/events")]
    assert first_stream_requests == 1
    assert all("token=" not in r.url for r in requests if r.resource_type != "document")
    first = await opened[0].all_headers()
    assert first.get("authorization") == f"Bearer {token}"
    assert "last-event-id" not in first
    answered = 0
    for r in opened[1:]:
        response = await r.response()
        if response is None:
            continue  # refused while the server was down: no headers were sent
        answered += 1
        assert response.status == 200
        sent = await r.all_headers()
        assert sent.get("last-event-id") == cursor_before
        assert sent.get("authorization") == f"Bearer {token}"
    assert answered >= 1, "no reconnect reached the restarted server"
    assert page_errors == []

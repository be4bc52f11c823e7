"""Helpers for browser tests that drive the live page in several tabs.

Each tab is the live page (``/?token=…``), whose events board subscribes through
herald.js; what a tab received is read from the page (``window.heraldEvents``,
``window.heraldStates``).  The server's side is read from ``/metrics``
(``herald_sse_connections``) and from Redis (the user's connection slots).
"""

from __future__ import annotations

import asyncio
import re
import time
import weakref
from collections.abc import Awaitable, Callable

import httpx
import redis.asyncio as aioredis
from playwright.async_api import BrowserContext, Page, Request

from herald.journal.positions import Target
from herald.journal.redis import RedisJournal
from tests.e2e.conftest import Deadline
from tests.servers import HeraldProcess

TYPE = "demo.seq"
BUDGET_S = 90.0
STREAM = "/api/events"
Mint = Callable[[str], str]
_GAUGE = re.compile(r'^herald_sse_connections\{endpoint="/api/events"\} ([0-9.e+]+)$', re.M)


async def eventually(
    read: Callable[[], Awaitable[object]], expected: object, deadline: Deadline, what: str
) -> None:
    """Read until the value is ``expected`` (each read is a round trip: no busy spin)."""
    last: object = None
    while time.monotonic() < deadline.at:
        last = await read()
        if last == expected:
            return
    raise AssertionError(f"{what}: expected {expected!r}, last read {last!r}")


async def wait_js(page: Page, expression: str, deadline: Deadline, what: str) -> None:
    try:
        await page.wait_for_function(expression, timeout=deadline.ms(), polling=50)
    except Exception as e:
        state = await page.evaluate("document.getElementById('state')?.textContent")
        count = await page.evaluate("document.getElementById('count')?.textContent")
        raise AssertionError(f"{what} (tab state {state!r}, {count} events)") from e


# Uncaught errors of each tab, by page.
errors: weakref.WeakKeyDictionary[Page, list[str]] = weakref.WeakKeyDictionary()


async def open_tab(context: BrowserContext, url: str, deadline: Deadline) -> Page:
    page = await context.new_page()
    seen = errors.setdefault(page, [])
    page.on("pageerror", lambda e: seen.append(str(e)))
    page.set_default_timeout(deadline.ms())
    await page.goto(url)
    return page


async def open_tabs(context: BrowserContext, url: str, n: int, deadline: Deadline) -> list[Page]:
    pages = list(await asyncio.gather(*(open_tab(context, url, deadline) for _ in range(n))))
    for page in pages:
        await wait_js(
            page,
            "document.getElementById('state')?.textContent === 'open'",
            deadline,
            "a tab never reported 'open'",
        )
    return pages


async def received(page: Page) -> list[int]:
    """The ``n`` of every demo event the tab delivered, in order."""
    ns: list[int] = await page.evaluate(
        f"window.heraldEvents.filter(e => e.type === '{TYPE}').map(e => e.data.n)"
    )
    return ns


async def wait_count(pages: list[Page], n: int, deadline: Deadline) -> None:
    for page in pages:
        await wait_js(
            page,
            f"window.heraldEvents && window.heraldEvents.length >= {n}",
            deadline,
            f"a tab never received {n} events",
        )


async def leaders(pages: list[Page]) -> list[bool]:
    return [
        await p.evaluate("document.getElementById('leader').dataset.leader === 'true'")
        for p in pages
    ]


async def open_sse_connections(server: HeraldProcess) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{server.url}/metrics")).text
    found = _GAUGE.search(text)
    return float(found.group(1)) if found else 0.0


async def slots(redis: aioredis.Redis, user: str) -> int:
    """The user's live connection slots (leases not yet expired), by Redis's clock."""
    seconds, micros = await redis.time()
    now_ms = seconds * 1000 + micros // 1000
    count: int = await redis.zcount(f"herald:{Target.user(user).tag}:conns", f"({now_ms}", "+inf")
    return count


async def publish(journal: RedisJournal, to: str, numbers: range, **extra: str) -> None:
    for n in numbers:
        await journal.publish(Target.user(to), TYPE, {"n": n, **extra})


async def tabs_that_led(pages: list[Page]) -> int:
    """How many tabs ever led.  Only a leader opens a stream, once per reign; a reign
    ends early only when its tab stops answering (a machine so loaded that a tab got
    no CPU for over a second looks exactly like a hung one), so this is 1 except
    under such load, and never one per tab."""
    led = [await p.evaluate("window.heraldStates.some(s => s.leader)") for p in pages]
    if sum(led) > 1:
        print(f"leadership moved {sum(led) - 1} time(s) under load")
    assert sum(led) < len(pages), "every tab led: no sharing"
    return sum(led)


def stream_requests(context: BrowserContext) -> list[Request]:
    seen: list[Request] = []
    context.on(
        "request",
        lambda r: (
            seen.append(r) if r.method == "GET" and r.url.split("?")[0].endswith(STREAM) else None
        ),
    )
    return seen


async def any_leader(pages: list[Page]) -> bool:
    return any(await leaders(pages))

"""herald.js in real headless Chromium: tabs of one browser share one connection.

Tabs of one browser context share Web Locks and BroadcastChannel, as tabs of one
browser profile do.  Each tab here is the live page (``/?token=…``), whose events
board subscribes through herald.js; what a tab received is read from the page
(``window.heraldEvents``, ``window.heraldStates``).  The server's side is read from
``/metrics`` (``herald_sse_connections``) and from Redis (the user's connection
slots).  Faults (503s, a 429) come from a proxy in front of the real server.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser, BrowserContext, Page, Request, Response

from herald.journal.positions import Target
from herald.journal.redis import RedisJournal
from tests.conftest import REDIS_URL
from tests.e2e.conftest import Deadline
from tests.e2e.http_proxy import FaultyHttpProxy
from tests.servers import HeraldProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TYPE = "demo.seq"
BUDGET_S = 90.0
STREAM = "/api/events"
Mint = Callable[[str], str]
_GAUGE = re.compile(r'^herald_sse_connections\{endpoint="/api/events"\} ([0-9.e+]+)$', re.M)


# ---- helpers ----------------------------------------------------------------------------


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def proxy(server: HeraldProcess) -> AsyncIterator[FaultyHttpProxy]:
    started = await FaultyHttpProxy(server.port).start()
    try:
        yield started
    finally:
        await started.aclose()


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
_errors: weakref.WeakKeyDictionary[Page, list[str]] = weakref.WeakKeyDictionary()


async def open_tab(context: BrowserContext, url: str, deadline: Deadline) -> Page:
    page = await context.new_page()
    errors = _errors.setdefault(page, [])
    page.on("pageerror", lambda e: errors.append(str(e)))
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


# ---- one connection per browser --------------------------------------------------------


async def test_three_tabs_of_one_user_share_one_connection(
    browser: Browser,
    server: HeraldProcess,
    journal: RedisJournal,
    redis_client: aioredis.Redis,
    mint: Mint,
    unique: str,
) -> None:
    deadline = Deadline(BUDGET_S)
    token = mint(unique)
    context = await browser.new_context()
    streams = stream_requests(context)

    pages = await open_tabs(context, f"{server.url}/?token={token}", 3, deadline)
    assert await pages[0].evaluate("window.isSecureContext"), "Web Locks need a secure context"
    assert sorted(await leaders(pages)) == [False, False, True]
    await eventually(lambda: slots(redis_client, unique), 1, deadline, "the user's slots")
    await eventually(lambda: open_sse_connections(server), 1, deadline, "open SSE connections")

    await publish(journal, unique, range(1, 201))
    await wait_count(pages, 200, deadline)
    for page in pages:
        assert await received(page) == list(range(1, 201))
        assert _errors[page] == []
    assert len(streams) == await tabs_that_led(pages)
    assert (await leaders(pages)).count(True) == 1
    await eventually(lambda: slots(redis_client, unique), 1, deadline, "the user's slots")
    await eventually(lambda: open_sse_connections(server), 1, deadline, "open SSE connections")
    await context.close()


async def test_closing_the_leader_mid_stream_hands_over_within_two_seconds(
    browser: Browser,
    server: HeraldProcess,
    journal: RedisJournal,
    mint: Mint,
    unique: str,
) -> None:
    deadline = Deadline(BUDGET_S)
    token = mint(unique)
    context = await browser.new_context()
    pages = await open_tabs(context, f"{server.url}/?token={token}", 3, deadline)
    await publish(journal, unique, range(1, 51))
    await wait_count(pages, 50, deadline)

    leader = pages[(await leaders(pages)).index(True)]
    rest = [p for p in pages if p is not leader]
    # Events in flight while the leader goes, more while no tab leads (replayed by
    # the next leader from the shared cursor), more once it leads (live).
    await publish(journal, unique, range(51, 81))
    closed_at_ms = time.time() * 1000
    await leader.close()
    await publish(journal, unique, range(81, 141))
    await eventually(lambda: _any_leader(rest), True, deadline, "a remaining tab takes the lead")
    new_leader = rest[(await leaders(rest)).index(True)]
    states = await new_leader.evaluate("window.heraldStates")
    led_at = min(s["at"] for s in states if s["leader"])
    opened_at = min(s["at"] for s in states if s["leader"] and s["state"] == "open")
    print(
        f"takeover: lead after {led_at - closed_at_ms:.0f} ms, "
        f"stream open after {opened_at - closed_at_ms:.0f} ms"
    )
    assert led_at - closed_at_ms < 2000, "the takeover took 2 s or more"

    await publish(journal, unique, range(141, 201))
    await wait_count(rest, 200, deadline)
    for page in rest:
        assert await received(page) == list(range(1, 201))
        assert _errors[page] == []
    await context.close()


async def test_a_leader_that_hangs_is_replaced_within_two_seconds(
    browser: Browser,
    server: HeraldProcess,
    journal: RedisJournal,
    redis_client: aioredis.Redis,
    mint: Mint,
    unique: str,
) -> None:
    """A hung tab keeps its lock (as a frozen one does): the others must notice the
    missing heartbeats and steal it; the old leader, once back, steps down."""
    deadline = Deadline(BUDGET_S)
    token = mint(unique)
    context = await browser.new_context()
    pages = await open_tabs(context, f"{server.url}/?token={token}", 3, deadline)
    await publish(journal, unique, range(1, 31))
    await wait_count(pages, 30, deadline)
    leader = pages[(await leaders(pages)).index(True)]
    rest = [p for p in pages if p is not leader]

    hung_at_ms = time.time() * 1000
    # Busy for 4 s: no timer, no message, no promise runs in that tab meanwhile.
    await leader.evaluate(
        "setTimeout(() => { const end = Date.now() + 4000; while (Date.now() < end); })"
    )
    await publish(journal, unique, range(31, 61))
    await eventually(lambda: _any_leader(rest), True, deadline, "a remaining tab takes the lead")
    new_leader = rest[(await leaders(rest)).index(True)]
    states = await new_leader.evaluate("window.heraldStates")
    led_at = min(s["at"] for s in states if s["leader"])
    print(f"hung leader replaced after {led_at - hung_at_ms:.0f} ms")
    assert led_at - hung_at_ms < 2000, "the takeover took 2 s or more"

    await publish(journal, unique, range(61, 101))
    await wait_count(pages, 100, deadline)  # the old leader too, once it runs again
    for page in pages:
        assert await received(page) == list(range(1, 101))
    await eventually(lambda: leaders(pages), [p is new_leader for p in pages], deadline, "leaders")
    await eventually(lambda: slots(redis_client, unique), 1, deadline, "the user's slots")
    assert all(_errors[p] == [] for p in pages)
    await context.close()


async def _any_leader(pages: list[Page]) -> bool:
    return any(await leaders(pages))


async def test_ten_tabs_under_a_cap_of_eight_get_no_429_and_everything(
    browser: Browser,
    server: HeraldProcess,
    journal: RedisJournal,
    redis_client: aioredis.Redis,
    mint: Mint,
    unique: str,
) -> None:
    deadline = Deadline(BUDGET_S)
    token = mint(unique)
    context = await browser.new_context()
    statuses: list[int] = []

    def on_response(r: Response) -> None:
        if r.url.split("?")[0].endswith(STREAM):
            statuses.append(r.status)

    context.on("response", on_response)
    pages = await open_tabs(context, f"{server.url}/?token={token}", 10, deadline)
    assert (await leaders(pages)).count(True) == 1
    await publish(journal, unique, range(1, 101))
    await wait_count(pages, 100, deadline)
    for page in pages:
        assert await received(page) == list(range(1, 101))
    assert set(statuses) == {200}, f"stream answers: {statuses}"
    assert len(statuses) == await tabs_that_led(pages)
    await eventually(lambda: slots(redis_client, unique), 1, deadline, "the user's slots")
    assert all(_errors[p] == [] for p in pages)
    await context.close()


# ---- reconnects that never give up -----------------------------------------------------


async def test_503_for_five_seconds_backs_off_then_resumes_without_loss(
    browser: Browser,
    server: HeraldProcess,
    journal: RedisJournal,
    proxy: FaultyHttpProxy,
    mint: Mint,
    unique: str,
) -> None:
    deadline = Deadline(BUDGET_S)
    token = mint(unique)
    context = await browser.new_context()
    pages = await open_tabs(context, f"{proxy.url}/?token={token}", 2, deadline)
    await publish(journal, unique, range(1, 21))
    await wait_count(pages, 20, deadline)

    began = time.monotonic()
    proxy.refuse(503, seconds=5)
    proxy.cut()
    await publish(journal, unique, range(21, 61))  # while every attempt gets a 503
    await asyncio.wait_for(proxy.lifted.wait(), deadline.s())
    refused = [a.at - began for a in proxy.attempts if a.status == 503]
    await publish(journal, unique, range(61, 81))
    await wait_count(pages, 80, deadline)
    for page in pages:
        assert await received(page) == list(range(1, 81))

    gaps = [b - a for a, b in itertools.pairwise(refused)]
    print(f"503 attempts at {[round(t, 2) for t in refused]} s; gaps {[round(g, 2) for g in gaps]}")
    # Backing off, not hammering: a few attempts in 5 s, each wait longer than the last
    # (equal jitter keeps the n-th wait within [base*2^(n-1), base*2^n]).
    assert 2 <= len(refused) <= 6
    assert gaps == sorted(gaps)
    ok = [a for a in proxy.attempts if a.status == 200 and a.at > began]
    assert ok, "no attempt succeeded after the 503s"
    states: list[dict[str, object]] = await pages[0].evaluate("window.heraldStates")
    assert any(s["state"] == "backoff" and s.get("status") == 503 for s in states)
    assert all(_errors[p] == [] for p in pages)
    await context.close()


async def test_429_retry_after_is_honoured(
    browser: Browser,
    server: HeraldProcess,
    journal: RedisJournal,
    proxy: FaultyHttpProxy,
    mint: Mint,
    unique: str,
) -> None:
    deadline = Deadline(BUDGET_S)
    token = mint(unique)
    context = await browser.new_context()
    pages = await open_tabs(context, f"{proxy.url}/?token={token}", 2, deadline)
    await publish(journal, unique, range(1, 11))
    await wait_count(pages, 10, deadline)

    proxy.refuse(429, times=1, headers={"Retry-After": "3"})
    proxy.cut()
    await publish(journal, unique, range(11, 31))
    await asyncio.wait_for(proxy.lifted.wait(), deadline.s())
    await wait_count(pages, 30, deadline)
    for page in pages:
        assert await received(page) == list(range(1, 31))

    refused = next(a for a in proxy.attempts if a.status == 429)
    after = [a.at for a in proxy.attempts if a.at > refused.at]
    assert after, "no attempt after the 429"
    waited = after[0] - refused.at
    print(f"next attempt {waited:.2f} s after the 429")
    assert 3.0 <= waited < 5.0, "Retry-After: 3 not honoured"
    assert all(_errors[p] == [] for p in pages)
    await context.close()


# ---- isolation ---------------------------------------------------------------------------


async def test_two_users_never_see_each_others_events(
    browser: Browser,
    server: HeraldProcess,
    journal: RedisJournal,
    mint: Mint,
    unique: str,
) -> None:
    deadline = Deadline(BUDGET_S)
    users = [f"{unique}a", f"{unique}b", f"{unique}c", f"{unique}d"]
    tokens = [mint(u) for u in users]
    first, second = await browser.new_context(), await browser.new_context()
    # Two users in two contexts, two tabs each; and two users in one context, whose
    # tabs must not share a connection either.
    a_pages = await open_tabs(first, f"{server.url}/?token={tokens[0]}", 2, deadline)
    b_pages = await open_tabs(second, f"{server.url}/?token={tokens[1]}", 2, deadline)
    c_page = (await open_tabs(first, f"{server.url}/?token={tokens[2]}", 1, deadline))[0]
    d_page = (await open_tabs(first, f"{server.url}/?token={tokens[3]}", 1, deadline))[0]
    assert await leaders([c_page, d_page]) == [True, True]

    for i, user in enumerate(users):
        await publish(journal, user, range(1, 31), user=user)
        await journal.publish(Target.user(user), TYPE, {"n": 1000 + i, "user": user})
    by_user = {users[0]: a_pages, users[1]: b_pages, users[2]: [c_page], users[3]: [d_page]}
    for pages in by_user.values():
        await wait_count(pages, 31, deadline)
    for user, pages in by_user.items():
        for page in pages:
            owners = await page.evaluate("window.heraldEvents.map(e => e.data.user)")
            assert set(owners) == {user}
            assert await received(page) == [*range(1, 31), 1000 + users.index(user)]
    assert all(_errors[p] == [] for p in [*a_pages, *b_pages, c_page, d_page])
    await first.close()
    await second.close()


async def test_without_web_locks_each_tab_connects_on_its_own(
    browser: Browser,
    server: HeraldProcess,
    journal: RedisJournal,
    mint: Mint,
    unique: str,
) -> None:
    deadline = Deadline(BUDGET_S)
    token = mint(unique)
    context = await browser.new_context()
    await context.add_init_script(
        "Object.defineProperty(Navigator.prototype, 'locks', {get: () => undefined})"
    )
    streams = stream_requests(context)
    pages = await open_tabs(context, f"{server.url}/?token={token}", 2, deadline)
    for page in pages:
        state = await page.evaluate("window.heraldStates.at(-1)")
        assert state["shared"] is False and state["leader"] is True
    await publish(journal, unique, range(1, 21))
    await wait_count(pages, 20, deadline)
    for page in pages:
        assert await received(page) == list(range(1, 21))
    assert len(streams) == 2
    assert all(_errors[p] == [] for p in pages)
    await context.close()


# ---- chat message streams ----------------------------------------------------------------


async def test_subscribe_message_reads_to_the_end_once_across_a_drop(
    browser: Browser, server: HeraldProcess, proxy: FaultyHttpProxy, mint: Mint, unique: str
) -> None:
    deadline = Deadline(BUDGET_S)
    headers = {"Authorization": f"Bearer {mint(unique)}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:

        async def emit(*texts: str) -> None:
            events = [{"type": "answer", "payload": {"text": t}} for t in texts]
            r = await http.post(f"/api/messages/{message}/events", json={"events": events})
            assert r.status_code in (200, 201), r.text

        created = await http.post("/api/messages", json={})
        assert created.status_code == 201, created.text
        message = created.json()["id"]
        await emit("a", "b", "c")

        page = await (await browser.new_context()).new_page()
        await page.goto(f"{proxy.url}/healthz")
        token = headers["Authorization"].removeprefix("Bearer ")
        read = """async ([name, id, token, after]) => {
          const { subscribeMessage } = await import("/herald.js");
          const out = (window[name] = { events: [], ends: [] });
          subscribeMessage(id, { token, after,
            onEvent: (e, meta) => out.events.push([meta.seq, e.type, e.data.text ?? null]),
            onEnd: (e) => out.ends.push(e ? e.type : null) });
        }"""
        await page.evaluate(read, ["first", message, token, -1])
        await wait_js(page, "window.first.events.length >= 3", deadline, "first events")

        proxy.cut()  # the stream drops; more is said meanwhile; the client resumes
        await emit("d", "e")
        assert (await http.post(f"/api/messages/{message}/complete")).status_code in (200, 201)
        await wait_js(page, "window.first.ends.length === 1", deadline, "the end")
        first = await page.evaluate("window.first")
        texts = ["a", "b", "c", "d", "e"]
        assert first["events"] == [
            *([i, "message.answer", t] for i, t in enumerate(texts)),
            [5, "message.end", None],
        ]
        assert first["ends"] == ["message.end"]
        assert [a.status for a in proxy.attempts] == [200, 200], "one drop, one resume"

        # Asked again after its end: the server answers 204, and that is the end too.
        await page.evaluate(read, ["again", message, token, 5])
        await wait_js(page, "window.again.ends.length === 1", deadline, "the 204")
        assert await page.evaluate("window.again") == {"events": [], "ends": [None]}
        assert proxy.attempts[-1].status == 204

"""herald.js in real headless Chromium: reconnects that never give up.

Faults come from a proxy in front of the real server (tests/e2e/http_proxy.py),
not from hooks in Herald: 503s for a while, a 429 with Retry-After, dropped streams.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import httpx
import pytest
from playwright.async_api import Browser

from herald.journal.redis import RedisJournal
from tests.e2e.conftest import Deadline
from tests.e2e.http_proxy import FaultyHttpProxy
from tests.e2e.tabs import (
    BUDGET_S,
    Mint,
    errors,
    open_tabs,
    publish,
    received,
    wait_count,
    wait_js,
)
from tests.servers import HeraldProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

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
    assert all(errors[p] == [] for p in pages)
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
    assert all(errors[p] == [] for p in pages)
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

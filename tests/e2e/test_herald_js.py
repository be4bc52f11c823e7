"""herald.js's pure parts, run in Chromium: the SSE decoder, the per-tab
de-duplication by position, the backoff and Retry-After.

The module is served to the page by Playwright from the repository (no server):
these tables are about the client's rules, the other browser tests about the
client against a real Herald.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Page, Route

from tests.e2e.conftest import launched

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "js" / "herald.js"
ORIGIN = "http://herald.test"

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def page() -> AsyncIterator[Page]:
    """One browser and page for the whole module: these tests only evaluate code."""
    async with launched() as browser:
        page = await browser.new_page()
        await page.route(f"{ORIGIN}/**", serve)
        await page.goto(f"{ORIGIN}/")
        yield page


async def serve(route: Route) -> None:
    if route.request.url == f"{ORIGIN}/herald.js":
        await route.fulfill(body=CLIENT.read_text(), content_type="text/javascript")
    else:
        await route.fulfill(body="<!doctype html><title>t</title>", content_type="text/html")


async def run(page: Page, body: str, arg: Any = None) -> Any:
    """Evaluate ``body`` (an async function of ``(h, arg)``, h = the module)."""
    return await page.evaluate(
        f"async (arg) => {{ const h = await import('/herald.js'); return ({body})(h, arg); }}",
        arg,
    )


DECODE = """(h, chunks) => {
  const d = new h.SSEDecoder();
  const events = chunks.flatMap((c) => d.push(c)).map((e) => [e.id, e.data]);
  return {events, retry: d.retry, lastId: d.lastId};
}"""


@pytest.mark.parametrize(
    ("chunks", "events"),
    [
        (["id: 1\ndata: a\n\n"], [["1", "a"]]),
        (["id: 1\r\ndata: a\r\n\r\nid: 2\rdata: b\r\r"], [["1", "a"], ["2", "b"]]),
        # A CR ending a chunk ends its line at once; an LF starting the next is the
        # rest of that CRLF, not a second line end.
        (["id: 1\r", "\ndata: a\r", "\n\r", "\n"], [["1", "a"]]),
        (["data: a\r", "\r", "data: b\r", "\n", "\n"], [[None, "a"], [None, "b"]]),
        (["data: a\rdata: b\r", "\n\n"], [[None, "a\nb"]]),
        (["data: one\ndata: two\n\n"], [[None, "one\ntwo"]]),
        ([": ping\n\n", ":\n\n"], []),
        (["\ufeffdata: x\n\n"], [[None, "x"]]),
        (["data\n\n"], [[None, ""]]),
        (["data:no-space\n\n"], [[None, "no-space"]]),
        (["id: 7\n\n", "data: after\n\n"], [[None, "after"]]),
        (["data: never finished\n"], []),
    ],
)
async def test_sse_decoder(page: Page, chunks: list[str], events: list[list[str | None]]) -> None:
    assert (await run(page, DECODE, chunks))["events"] == events
    # The same text one character at a time decodes the same.
    chars = [c for chunk in chunks for c in chunk]
    assert (await run(page, DECODE, chars))["events"] == events


async def test_sse_decoder_keeps_retry_and_the_last_id(page: Page) -> None:
    out = await run(page, DECODE, ["retry: 300\n\n", "id: 5\ndata: x\n\n", "id: 6\n\n"])
    assert out["retry"] == 300
    assert out["lastId"] == "6"


DELIVER = """(h, frames) => {
  const got = [];
  const d = new h.Delivery({
    subject: "ann",
    event: (env, meta) => got.push([env.type === "herald.gap" ? "gap" : env.data.n, meta.stream]),
    gap: (env, meta) => got.push(["gap:" + env.data.reason, meta.stream]),
  });
  for (const [cursor, envelope] of frames) d.accept(cursor, JSON.stringify(envelope));
  return {got, cursor: d.cursor()};
}"""


def u(n: int, epoch: str = "e1") -> list[Any]:
    return [f"u~{epoch}~{n}-0", {"id": f"{n}-0", "type": "demo", "data": {"n": n}}]


def both(un: int, tn: int, which: str) -> list[Any]:
    n = un if which == "u" else tn
    return [f"u~e1~{un}-0,t:p~e2~{tn}-0", {"id": f"{n}-0", "type": "demo", "data": {"n": n}}]


def gap(cursor: str, reason: str, stream: str = "user:ann") -> list[Any]:
    return [
        cursor,
        {"id": cursor, "type": "herald.gap", "data": {"stream": stream, "reason": reason}},
    ]


@pytest.mark.parametrize(
    ("frames", "delivered"),
    [
        # A replay overlapping live delivery, or a new leader resuming from an older
        # cursor than this tab's: each event once, in order.
        ([u(1), u(2), u(3), u(2), u(3), u(4)], [1, 2, 3, 4]),
        ([u(1), u(2), u(3), u(4), u(5), u(3), u(4), u(5), u(6), u(7)], [1, 2, 3, 4, 5, 6, 7]),
        # Two streams may hold the same id: both deliver, once each.
        ([both(0, 100, "t"), both(100, 100, "u"), both(100, 100, "u")], [100, 100]),
        # Replay goes stream by stream; an overlap replays both.
        (
            [both(1, 0, "u"), both(1, 5, "t"), both(2, 5, "u"), both(1, 5, "u"), both(2, 5, "u")],
            [1, 5, 2],
        ),
        # A trim gap is news only to a tab that has not passed it.
        ([u(5), gap("u~e1~3-0", "trimmed"), u(6)], [5, 6]),
        ([u(5), gap("u~e1~8-0", "trimmed"), u(9)], [5, "gap:trimmed", 9]),
        # A lost history: news once; the new epoch's events follow.
        (
            [u(5), gap("u~e9~0-0", "lost"), u(1, "e9"), gap("u~e9~0-0", "lost"), u(1, "e9")],
            [5, "gap:lost", 1],
        ),
        ([u(5), gap("u~~0-0", "lost"), gap("u~~0-0", "lost"), u(1, "e9")], [5, "gap:lost", 1]),
        # A frame without a cursor (a synthetic end) cannot be a duplicate.
        ([u(1), ["", {"id": "x", "type": "demo", "data": {"n": 0}}]], [1, 0]),
    ],
)
async def test_delivery_drops_what_the_tab_already_delivered(
    page: Page, frames: list[list[Any]], delivered: list[int | str]
) -> None:
    out = await run(page, DELIVER, frames)
    assert [n for n, _ in out["got"]] == delivered


async def test_delivery_names_the_stream_and_resumes_from_every_position(page: Page) -> None:
    out = await run(page, DELIVER, [both(1, 0, "u"), both(1, 7, "t")])
    assert out["got"] == [[1, "user:ann"], [7, "topic:p"]]
    assert out["cursor"] == "u~e1~1-0,t:p~e2~7-0"


async def test_cursors_and_ids(page: Page) -> None:
    out = await run(
        page,
        """(h) => ({
          parsed: [...h.parseCursor("u~ab~1-2,t:x~~3-4")],
          plain: [...h.parseCursor("17-0")],
          round: h.renderCursor(h.parseCursor("u~ab~1-2,t:x~~3-4")),
          order: [h.compareIds("9-0", "10-0"), h.compareIds("10-1", "10-0"),
                  h.compareIds("18446744073709551615-5", "18446744073709551615-5")],
          after: [h.isAfter({epoch: "b", id: "1-0"}, {epoch: "a", id: "9-0"}),
                  h.isAfter({epoch: "", id: "1-0"}, {epoch: "a", id: "9-0"}),
                  h.isAfter({epoch: "a", id: "1-0"}, undefined)],
        })""",
    )
    assert out["parsed"] == [
        ["u", {"epoch": "ab", "id": "1-2"}],
        ["t:x", {"epoch": "", "id": "3-4"}],
    ]
    assert out["plain"] == [["u", {"epoch": "", "id": "17-0"}]]
    assert out["round"] == "u~ab~1-2,t:x~~3-4"
    assert out["order"] == [-1, 1, 0]
    assert out["after"] == [True, False, True]


async def test_backoff_doubles_with_jitter_up_to_its_cap_and_resets(page: Page) -> None:
    waits = await run(
        page,
        """(h) => {
          const b = new h.Backoff({baseMs: 1000, maxMs: 8000});
          const runs = [];
          for (let r = 0; r < 50; r++) {
            b.reset();
            runs.push(Array.from({length: 6}, () => b.next()));
          }
          return runs;
        }""",
    )
    for run_ in waits:
        for n, wait in enumerate(run_):
            ceiling = min(8000, 1000 * 2**n)
            assert ceiling / 2 <= wait <= ceiling
    assert len({round(w[0]) for w in waits}) > 1, "no jitter"


async def test_retry_after(page: Page) -> None:
    out = await run(
        page,
        """(h) => [h.retryAfterMs("3"), h.retryAfterMs(" 0 "), h.retryAfterMs("soon"),
                   h.retryAfterMs(null),
                   h.retryAfterMs(new Date(Date.now() + 60000).toUTCString()) > 50000]""",
    )
    assert out == [3000, 0, None, None, True]

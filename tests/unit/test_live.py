"""The live loop's fast path and process-wide timers (``herald.streams.live``)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from herald.journal.runtime.metrics import ENVELOPES_DELIVERED
from herald.journal.wire import KEEPALIVE
from herald.streams.cursor import Cursor
from herald.streams.live import run_live
from herald.streams.session import Session
from tests.unit.test_session import TOPIC, Harness, numbers, parse, publish


class Writer:
    """A DirectWriter whose ``emit`` is a bound method, as the SSE response's is.
    ``paused`` makes the fast path decline (as a paused transport does)."""

    def __init__(self) -> None:
        self.direct: list[bytes] = []  # written by the hub's fast path / the timers
        self.emitted: list[bytes] = []  # written by the stream's own task
        self.written: list[bytes] = []  # both, in the order they were written
        self.paused = False
        self.changed = asyncio.Event()

    def ready(self) -> bool:
        return not self.paused

    def write_now(self, chunk: bytes) -> None:
        self.direct.append(chunk)
        self.written.append(chunk)
        self.changed.set()

    async def emit(self, chunk: bytes) -> None:
        self.emitted.append(chunk)
        self.written.append(chunk)
        self.changed.set()

    def frames(self) -> list[tuple[str, dict]]:
        return parse([c for c in self.all() if c != KEEPALIVE])

    def all(self) -> list[bytes]:
        return self.direct + self.emitted  # only valid when one of them is used

    async def until(self, predicate, seconds: float = 2.0) -> None:
        async with asyncio.timeout(seconds):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


async def armed(sub) -> None:
    """Until the stream's task waits with its fast path set (deadline 2 s)."""
    async with asyncio.timeout(2):
        while sub.direct is None:  # noqa: ASYNC110 - nothing to wait on: poll, with a deadline
            await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def streaming(
    h: Harness, cursor: str | None, *topics, keepalive_s: float = 15.0, delivered=None
):
    s = h.session(cursor, *topics)
    w = Writer()
    async with h.hub.subscribe(s.channels, h.queue) as sub:
        await s.open()
        task = asyncio.create_task(s.live(sub, w.emit, keepalive_s, None, delivered))
        await armed(sub)
        try:
            yield s, w, sub
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_in_sync_messages_are_written_by_the_hub_not_the_stream_task():
    h = Harness()
    await publish(h.journal, 1, 1)
    async with streaming(h, None) as (s, w, _):
        await publish(h.journal, 2, 3)
        await w.until(lambda: len(w.frames()) == 3)
        # One write per message handed over alone (the memory hub's); the messages of
        # one burst leave in one write (test_hub_burst).
        assert w.emitted == [] and len(w.direct) == 3
        frames = w.frames()
        assert numbers(frames) == [2, 3, 4]
        assert frames[-1][0] == s.cursor  # the frame's id is the session's cursor


async def test_a_topic_reader_stays_on_the_fast_path_with_its_composite_cursor():
    h = Harness()
    await publish(h.journal, 1, 1)
    await publish(h.journal, 1, 1, TOPIC)
    async with streaming(h, None, TOPIC) as (s, w, _):
        await publish(h.journal, 2, 2, TOPIC)
        await w.until(lambda: len(w.frames()) == 2)
        await publish(h.journal, 3, 1)  # the user stream moves: the cursor is re-split
        await w.until(lambda: len(w.frames()) == 3)
        assert w.emitted == []
        frames = w.frames()
        assert numbers(frames) == [2, 3, 3]
        assert frames[-1][0] == s.cursor
        # Every id resumes exactly after its own frame, in its own stream's item.
        cursors = [Cursor.parse(c) for c, _ in frames]
        keys = ["t:printers", "t:printers", "u"]
        assert [str(c.get(k).id) for c, k in zip(cursors, keys, strict=True)] == [
            e["id"] for _, e in frames
        ]
        assert cursors[0].get("u") == cursors[1].get("u")  # the user item, unchanged


async def test_a_stream_with_no_history_takes_the_fast_path_from_its_first_event():
    # A new topic has no epoch and no entries when the session opens, and its first
    # event has no previous id: it is still simply the next one, so it is written by
    # the hub, not by waking every subscriber's task.
    h = Harness()
    async with streaming(h, None, TOPIC) as (s, w, _):
        await publish(h.journal, 1, 2, TOPIC)
        await w.until(lambda: len(w.frames()) == 2)
        await publish(h.journal, 1, 1)  # and the user stream's first one
        await w.until(lambda: len(w.frames()) == 3)
        assert w.emitted == []
        frames = w.frames()
        assert numbers(frames) == [1, 2, 1]
        assert frames[-1][0] == s.cursor
        resumed = Cursor.parse(frames[1][0]).get("t:printers")
        assert resumed is not None and resumed.epoch is not None
        assert str(resumed.id) == frames[1][1]["id"]


async def test_a_paused_writer_sends_through_the_task_in_order():
    h = Harness()
    await publish(h.journal, 1, 1)
    async with streaming(h, None) as (_, w, sub):
        w.paused = True
        await publish(h.journal, 2, 2)
        await w.until(lambda: len(parse(w.emitted)) == 2)
        assert w.direct == []
        w.paused = False
        await armed(sub)
        await publish(h.journal, 4, 1)
        await w.until(lambda: len(parse(w.direct)) == 1)
        assert numbers(parse(w.emitted) + parse(w.direct)) == [2, 3, 4]


async def test_a_message_behind_a_waiting_write_waits_too():
    # The keepalive timer found the writer paused and left its bytes for the stream's
    # task; a message the hub hands over before that task runs goes after them.
    h = Harness()
    await publish(h.journal, 1, 1)
    async with streaming(h, None) as (_, w, sub):
        live = sub.direct
        w.paused = True
        live.write(KEEPALIVE, asyncio.get_running_loop().time())
        w.paused = False  # ready again, but those bytes are not written yet
        await publish(h.journal, 2, 1)  # the memory hub delivers before the task runs
        await w.until(lambda: b"data: " in b"".join(w.written))
        chunk = b"".join(w.written)
        assert chunk.startswith(KEEPALIVE)
        assert numbers(parse([chunk.removeprefix(KEEPALIVE)])) == [2]


async def test_fast_path_deliveries_are_counted_once_each():
    h = Harness()
    counter = ENVELOPES_DELIVERED.labels(endpoint="unit-test-fast-path")
    before = counter._value.get()
    await publish(h.journal, 1, 1, TOPIC)
    async with streaming(h, None, TOPIC, delivered=counter) as (_, w, _sub):
        for n in range(2, 5):
            await publish(h.journal, n, 1, TOPIC)  # three one-message bursts
        await publish(h.journal, 1, 1)  # and one on the user stream
        await w.until(lambda: len(w.frames()) == 4)
        assert w.emitted == []
        w.paused = True  # two more through the stream's task, which counts what it writes
        await publish(h.journal, 5, 2, TOPIC)
        await w.until(lambda: len(parse(w.emitted)) == 2)
        async with asyncio.timeout(2):  # applied once per loop turn
            while counter._value.get() - before < 6:  # noqa: ASYNC110 - polled, with a deadline
                await asyncio.sleep(0)
        await asyncio.sleep(0)  # one more turn: nothing is counted twice
        assert counter._value.get() - before == 6


async def test_a_live_topic_reader_renders_its_cursor_before_the_first_event(monkeypatch):
    # Every reader of a new topic gets its first event in the same burst: the cursor
    # around the topic's item is rendered when the stream goes live, not then.
    h = Harness()
    async with streaming(h, None, TOPIC) as (s, w, _):
        renders: list[str] = []
        split = Session._split_cursor
        monkeypatch.setattr(
            Session, "_split_cursor", lambda self, key: renders.append(key) or split(self, key)
        )
        await publish(h.journal, 1, 2, TOPIC)
        await w.until(lambda: len(w.frames()) == 2)
        assert renders == [] and w.emitted == []
        assert w.frames()[-1][0] == s.cursor
        await publish(h.journal, 1, 1)  # the user stream moves: rendered then
        await w.until(lambda: len(w.frames()) == 3)
        assert renders == ["u"] and w.frames()[-1][0] == s.cursor


async def test_a_reader_of_its_own_stream_alone_renders_its_cursor_at_the_first_event(
    monkeypatch,
):
    # One reader per user stream: nothing to gain by holding the parts while idle.
    h = Harness()
    async with streaming(h, None) as (s, w, _):
        renders: list[str] = []
        split = Session._split_cursor
        monkeypatch.setattr(
            Session, "_split_cursor", lambda self, key: renders.append(key) or split(self, key)
        )
        await publish(h.journal, 1, 2)
        await w.until(lambda: len(w.frames()) == 2)
        assert renders == ["u"] and w.emitted == []
        assert w.frames()[-1][0] == s.cursor


async def test_a_hole_declines_the_fast_path_and_is_refilled_from_the_journal():
    h = Harness()
    await publish(h.journal, 1, 1)
    async with streaming(h, None) as (_, w, _sub):
        h.journal.listeners.remove(h.hub._on_publish)  # the hub misses two messages
        await publish(h.journal, 2, 2)
        h.journal.listeners.append(h.hub._on_publish)
        await publish(h.journal, 4, 1)
        await w.until(lambda: len(parse(w.emitted)) == 3)
        assert numbers(parse(w.emitted)) == [2, 3, 4]


@pytest.mark.parametrize("fast", [True, False])
async def test_an_idle_stream_gets_keepalives_from_the_process_wide_timer(fast: bool):
    h = Harness()
    async with streaming(h, None, keepalive_s=0.05) as (_, w, _sub):
        w.paused = not fast  # not ready: the timer wakes the task, which emits it
        await w.until(lambda: w.all().count(KEEPALIVE) >= 2)
        assert (w.direct if fast else w.emitted).count(KEEPALIVE) >= 2


async def test_the_stream_ends_at_until_without_a_timer_of_its_own():
    h = Harness()
    s = h.session(None)
    w = Writer()
    async with h.hub.subscribe(s.channels, h.queue) as sub:
        await s.open()
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(2):
            await run_live(sub, w.emit, s, 15.0, until=loop.time() + 0.05)
    assert w.all() == []

"""Session behaviour over the in-process journal and hub: no services needed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson
import pytest

from herald.journal.base import JournalLimits, PublishRequest
from herald.journal.memory import MemoryJournal
from herald.journal.positions import Target
from herald.streams.cursor import Cursor
from herald.streams.hub_memory import MemoryHub
from herald.streams.session import Overflowed, Session, SessionLimits

USER = Target.user("alice")
TOPIC = Target.topic("printers")


def parse(chunks: list[bytes]) -> list[tuple[str, dict]]:
    """(cursor, envelope) per SSE frame."""
    out = []
    for frame in b"".join(chunks).split(b"\n\n"):
        if not frame:
            continue
        fields = dict(line.split(b": ", 1) for line in frame.split(b"\n"))
        out.append((fields[b"id"].decode(), orjson.loads(fields[b"data"])))
    return out


def numbers(frames: list[tuple[str, dict]]) -> list[int]:
    return [env["data"]["n"] for _, env in frames if env["type"] != "herald.gap"]


def gaps(frames: list[tuple[str, dict]]) -> list[dict]:
    return [env["data"] for _, env in frames if env["type"] == "herald.gap"]


async def publish(journal: MemoryJournal, start: int, count: int, target: Target = USER) -> None:
    await journal.publish_many(
        [PublishRequest(target, "demo.seq", {"n": i}) for i in range(start, start + count)]
    )


async def discard(chunk: bytes) -> None:
    pass


RUNNING: list[Live] = []


@pytest.fixture(autouse=True)
async def stop_live_tasks() -> AsyncIterator[None]:
    yield
    while RUNNING:
        await RUNNING.pop().stop()


class Live:
    """Runs ``session.live`` in a task and collects what it emits."""

    def __init__(self, session: Session, sub: object) -> None:
        self.chunks: list[bytes] = []
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(session.live(sub, self.emit))  # type: ignore[arg-type]
        RUNNING.append(self)

    async def emit(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.changed.set()

    async def take(self, count: int) -> list[tuple[str, dict]]:
        """Frames received so far once ``count`` data events arrived (deadline 2 s)."""
        async with asyncio.timeout(2):
            while len([f for f in parse(self.chunks) if f[1]["type"] != "herald.gap"]) < count:
                self.changed.clear()
                await self.changed.wait()
        frames, self.chunks = parse(self.chunks), []
        return frames

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class Harness:
    def __init__(self, maxlen: int = 10000, queue: int = 100, **limits: int) -> None:
        self.journal = MemoryJournal(JournalLimits(stream_maxlen=maxlen))
        self.hub = MemoryHub(self.journal)
        self.queue = queue
        self.limits = SessionLimits(**{"replay_page": 7, **limits})

    def session(self, cursor: str | None = None, *targets: Target) -> Session:
        chosen = {"u": USER} | {f"t:{t.name}": t for t in targets}
        return Session(self.journal, chosen, Cursor.parse(cursor) if cursor else None, self.limits)


async def test_fresh_connect_is_live_only_then_resume_replays_exactly_the_rest():
    h = Harness()
    await publish(h.journal, 1, 5)  # before connecting: not replayed without a cursor
    s = h.session()
    async with h.hub.subscribe(s.channels, h.queue) as sub:
        await s.open()
        assert [c async for c in s.replay()] == []
        live = Live(s, sub)
        await publish(h.journal, 6, 3)
        frames = await live.take(3)
    assert numbers(frames) == [6, 7, 8]
    cursor = frames[1][0]  # resume after 7
    await publish(h.journal, 9, 20)
    again = h.session(cursor)
    async with h.hub.subscribe(again.channels, h.queue):
        assert await again.has_backlog()
        await again.open()
        replayed = parse([c async for c in again.replay()])
    assert numbers(replayed) == list(range(8, 29)) and gaps(replayed) == []


async def test_missed_live_message_is_a_hole_refilled_from_the_journal():
    h = Harness()
    s = h.session()
    async with h.hub.subscribe(s.channels, h.queue) as sub:
        await s.open()
        live = Live(s, sub)
        listener = h.journal.listeners.pop()  # the hub misses the next two messages
        await publish(h.journal, 1, 2)
        h.journal.listeners.append(listener)
        await publish(h.journal, 3, 1)  # its previous id is 2, not what was delivered
        frames = await live.take(3)
    assert numbers(frames) == [1, 2, 3] and gaps(frames) == []


async def test_resync_refills_everything_missed_and_drops_duplicates():
    h = Harness()
    s = h.session(None, TOPIC)
    async with h.hub.subscribe(s.channels, h.queue) as sub:
        await s.open()
        live = Live(s, sub)
        listener = h.journal.listeners.pop()
        await publish(h.journal, 1, 3)
        await publish(h.journal, 100, 2, TOPIC)
        h.journal.listeners.append(listener)
        h.hub.resync_all()
        frames = await live.take(5)
    assert sorted(numbers(frames)) == [1, 2, 3, 100, 101]
    assert gaps(frames) == []


async def test_slow_client_overflow_ends_the_session():
    h = Harness(queue=10)
    s = h.session()
    async with h.hub.subscribe(s.channels, h.queue) as sub:
        await s.open()
        await publish(h.journal, 1, 50)  # nobody reads meanwhile
        assert sub.pending() == 1, "the overflowed queue was cleared to one signal"
        with pytest.raises(Overflowed):
            async with asyncio.timeout(2):
                await s.live(sub, discard)


async def test_trimmed_history_gives_one_gap_then_contiguous_events():
    h = Harness(maxlen=10)
    await publish(h.journal, 1, 3)
    first = h.session("0-0")
    async with h.hub.subscribe(first.channels, h.queue):
        await first.open()
        seen = parse([c async for c in first.replay()])
    cursor = seen[-1][0]
    await publish(h.journal, 4, 40)  # trims 4.. away
    oldest = (await h.journal.info(USER)).first
    again = h.session(cursor)
    async with h.hub.subscribe(again.channels, h.queue):
        await again.open()
        frames = parse([c async for c in again.replay()])
    (gap,) = gaps(frames)
    assert gap["reason"] == "trimmed" and gap["first_available"] == str(oldest)
    assert gap["after"] == seen[-1][1]["id"]
    assert frames[0][1]["type"] == "herald.gap"
    kept = numbers(frames)
    assert kept == list(range(kept[0], 44)) and kept[0] > 4
    # Resuming from the gap frame's own cursor does not announce it again.
    from_gap = h.session(frames[0][0])
    async with h.hub.subscribe(from_gap.channels, h.queue):
        await from_gap.open()
        replay = parse([c async for c in from_gap.replay()])
    assert gaps(replay) == [] and numbers(replay) == kept


async def test_lost_stream_gives_a_lost_gap_and_the_new_history():
    h = Harness()
    await publish(h.journal, 1, 3)
    first = h.session("0-0")
    async with h.hub.subscribe(first.channels, h.queue):
        await first.open()
        cursor = parse([c async for c in first.replay()])[-1][0]
    h.journal.lose(USER)
    await publish(h.journal, 50, 2)
    again = h.session(cursor)
    async with h.hub.subscribe(again.channels, h.queue):
        await again.open()
        frames = parse([c async for c in again.replay()])
    assert [g["reason"] for g in gaps(frames)] == ["lost"]
    assert numbers(frames) == [50, 51]


async def test_live_epoch_change_is_detected_without_reconnecting():
    h = Harness()
    s = h.session()
    await publish(h.journal, 1, 1)
    async with h.hub.subscribe(s.channels, h.queue) as sub:
        await s.open()
        live = Live(s, sub)
        await publish(h.journal, 2, 1)
        assert numbers(await live.take(1)) == [2]
        h.journal.lose(USER)
        await publish(h.journal, 60, 2)
        frames = await live.take(2)
    assert [g["reason"] for g in gaps(frames)] == ["lost"] and numbers(frames) == [60, 61]


async def test_backlog_beyond_the_replay_limit_is_announced_and_skipped():
    h = Harness(max_replay_events=10)
    await publish(h.journal, 1, 1)
    start = (await h.journal.info(USER)).last
    await publish(h.journal, 2, 30)
    s = h.session(str(start))
    async with h.hub.subscribe(s.channels, h.queue) as sub:
        await s.open()
        frames = parse([c async for c in s.replay()])
        (gap,) = gaps(frames)
        assert gap["reason"] == "backlog_limit" and numbers(frames) == list(range(2, 12))
        await publish(h.journal, 32, 1)
        live = Live(s, sub)
        assert numbers(await live.take(1)) == [32]


async def test_no_cursor_and_no_stream_yet_then_first_event_arrives_live():
    h = Harness()
    s = h.session()
    async with h.hub.subscribe(s.channels, h.queue) as sub:
        await s.open()
        assert not await s.has_backlog()
        live = Live(s, sub)
        await publish(h.journal, 1, 2)
        assert numbers(await live.take(2)) == [1, 2]


async def test_an_expired_token_ends_even_a_stream_that_is_never_idle():
    h = Harness()
    s = h.session()
    async with h.hub.subscribe(s.channels, h.queue) as sub:
        await s.open()
        await publish(h.journal, 1, 5)  # always something to send
        emitted: list[bytes] = []

        async def emit(chunk: bytes) -> None:
            emitted.append(chunk)

        async with asyncio.timeout(2):
            await s.live(sub, emit, until=asyncio.get_running_loop().time() - 1)
    assert emitted == []


def test_gap_envelopes_have_unique_ids_even_at_one_cursor():
    from herald.journal.positions import StreamId
    from herald.streams.recovery import Gap, GapReason
    from herald.streams.session import gap_envelope

    gap = Gap("user:alice", StreamId(1, 0), StreamId(5, 0), GapReason.TRIMMED)
    one, two = (orjson.loads(gap_envelope("u~e~1-0", gap)) for _ in range(2))
    assert one["type"] == two["type"] == "herald.gap"
    assert (one["source"], one["id"]) != (two["source"], two["id"])

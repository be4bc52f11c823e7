"""The hub's fan-out in bursts (``Registry.deliver_in_steps``): when several messages
are pending, each subscriber gets all of its messages of the burst before the next
subscriber is served, so its fast path writes them as one chunk."""

from __future__ import annotations

import asyncio
import contextlib

import orjson

from herald.journal.positions import StreamId, Target
from herald.journal.wire import envelope_id
from herald.streams.cursor import Cursor
from herald.streams.hub import LiveMessage, Subscription
from herald.streams.live import run_live
from tests.unit.test_live import Writer, armed
from tests.unit.test_session import TOPIC, Harness, numbers, parse, publish


class Held:
    """Catches what the journal publishes instead of delivering it: a burst."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.burst: list[LiveMessage] = []

    def __enter__(self) -> Held:
        self.h.journal.listeners.remove(self.h.hub._on_publish)
        self.h.journal.listeners.append(self._on_publish)
        return self

    def __exit__(self, *exc: object) -> None:
        self.h.journal.listeners.remove(self._on_publish)
        self.h.journal.listeners.append(self.h.hub._on_publish)

    def _on_publish(
        self, target: Target, epoch: str, previous: StreamId | None, envelope: bytes
    ) -> None:
        id_ = StreamId.from_bytes(envelope_id(envelope))
        self.burst.append(LiveMessage(target.channel, epoch, previous, id_, envelope))


async def deliver_with_pauses(h: Harness, burst: list[LiveMessage]) -> int:
    """Deliver pausing after every subscriber (step 1), letting the loop run each
    time, as the Redis hub does after every step; returns the pauses taken."""
    pauses = 0
    for _ in h.hub._registry.deliver_in_steps(burst, 1):
        pauses += 1
        for _ in range(5):
            await asyncio.sleep(0)
    return pauses


@contextlib.asynccontextmanager
async def streams(h: Harness, n: int, *topics: Target):
    async with contextlib.AsyncExitStack() as stack:
        out: list[tuple[Writer, Subscription]] = []
        for _ in range(n):
            s = h.session(None, *topics)
            w = Writer()
            sub = await stack.enter_async_context(h.hub.subscribe(s.channels, h.queue))
            await s.open()
            task = asyncio.create_task(run_live(sub, w.emit, s, 15.0))
            stack.callback(task.cancel)
            await armed(sub)
            out.append((w, sub))
        yield out


async def test_three_buffered_messages_are_one_write_per_subscriber_in_order():
    h = Harness()
    await publish(h.journal, 1, 1)
    async with streams(h, 3) as subs:
        with Held(h) as held:
            await publish(h.journal, 2, 3)
        assert len(held.burst) == 3
        assert await deliver_with_pauses(h, held.burst) == 3  # one pause per subscriber
        for w, _ in subs:
            await w.until(lambda w=w: len(w.frames()) == 3)
            assert w.emitted == []
            assert len(w.direct) == 1  # the whole burst, one write
            frames = w.frames()
            assert numbers(frames) == [2, 3, 4]
            # Each frame's id resumes exactly after that frame.
            ids = [str(Cursor.parse(c).get("u").id) for c, _ in frames]
            assert ids == [str(m.id) for m in held.burst]
            assert ids == [e["id"] for _, e in frames]


async def test_a_burst_over_two_channels_keeps_the_publish_order_per_subscriber():
    h = Harness()
    await publish(h.journal, 1, 1)
    await publish(h.journal, 1, 1, TOPIC)
    async with streams(h, 2, TOPIC) as subs:
        with Held(h) as held:
            await publish(h.journal, 2, 1)
            await publish(h.journal, 2, 1, TOPIC)
            await publish(h.journal, 3, 1)
        await deliver_with_pauses(h, held.burst)
        for w, _ in subs:
            await w.until(lambda w=w: len(w.frames()) == 3)
            assert len(w.direct) == 1 and w.emitted == []
            frames = w.frames()
            assert [e["id"] for _, e in frames] == [str(m.id) for m in held.burst]
            assert [e["subject"] for _, e in frames] == [
                parse_subject(m.envelope) for m in held.burst
            ]


async def test_a_paused_transport_takes_the_burst_through_its_task_in_order():
    h = Harness()
    await publish(h.journal, 1, 1)
    async with streams(h, 2) as subs:
        (paused, _), (free, _) = subs
        paused.paused = True
        with Held(h) as held:
            await publish(h.journal, 2, 3)
        await deliver_with_pauses(h, held.burst)
        await paused.until(lambda: len(parse(paused.emitted)) == 3)
        await free.until(lambda: len(free.frames()) == 3)
        assert paused.direct == []  # declined, queued, written by its own task
        assert numbers(parse(paused.emitted)) == [2, 3, 4]
        assert len(free.direct) == 1 and numbers(free.frames()) == [2, 3, 4]


async def test_a_subscriber_declining_midway_queues_the_rest_of_its_burst():
    h = Harness()
    await publish(h.journal, 1, 1)
    async with streams(h, 1) as [(w, sub)]:
        with Held(h) as held:
            await publish(h.journal, 2, 3)
        first, *rest = held.burst
        # A hole: the burst lacks message 2, so 3 is declined and 3, 4 are queued
        # (never 4 on the fast path ahead of 3); the task refills 2 from the journal.
        await deliver_with_pauses(h, rest)
        await w.until(lambda: len(w.frames()) == 3)
        assert w.direct == []
        assert numbers(w.frames()) == [2, 3, 4]
        del first, sub


def parse_subject(envelope: bytes) -> str:
    return str(orjson.loads(envelope)["subject"])


async def test_a_subscriber_joining_during_the_last_pause_of_a_fan_out_breaks_nothing():
    # The fan-out pauses after every ``step`` subscribers; with exactly ``step`` of them
    # it pauses after the last one, and a subscriber joining then must not end the
    # fan-out with "Set changed size during iteration" (its messages would be lost).
    h = Harness()
    await publish(h.journal, 1, 1, TOPIC)
    async with streams(h, 2, TOPIC) as subs:
        for burst_size in (1, 2):
            with Held(h) as held:
                await publish(h.journal, 2, burst_size, TOPIC)
            steps = h.hub._registry.deliver_in_steps(held.burst, 2)
            assert next(steps) == 2  # paused after the last subscriber
            async with h.hub.subscribe((TOPIC.channel,), h.queue):
                assert list(steps) == []  # resumed, and done
        for w, _ in subs:
            await w.until(lambda w=w: len(w.frames()) == 3)
            assert numbers(w.frames()) == [2, 2, 3]

"""One contract, every hub: MemoryHub (fed by the in-process journal) and RedisHub
(fed by Redis pub/sub, on real Redis).

The contract (``herald.streams.hub``): ``subscribe`` returns only once the
subscription is live, so nothing published after it is missed; each subscriber
gets the messages of its channels in publish order, each carrying its id, the id
before it and the stream's epoch; subscriptions are reference-counted per channel
(one subscriber leaving, normally or by an exception, never cuts off another); a
full queue becomes one OVERFLOW and ``close_all`` one CLOSE, after which nothing
more is queued.  (RESYNC after a lost connection is RedisHub's alone: see
tests/integration/test_hub.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest
import redis.asyncio as aioredis

from herald.journal.base import Journal, JournalLimits, PublishResult
from herald.journal.memory import MemoryJournal
from herald.journal.positions import Target
from herald.journal.redis import RedisJournal
from herald.streams.hub import CLOSE, OVERFLOW, Hub, Live, LiveMessage, Subscription
from herald.streams.hub_memory import MemoryHub
from herald.streams.hub_redis import RedisHub
from tests.conftest import REDIS_URL

LIMITS = JournalLimits(max_envelope_bytes=4096, stream_maxlen=1000, idempotency_window_s=60)
DEADLINE_S = 10  # generous: the machine may be loaded


@dataclass
class Rig:
    hub: Hub
    journal: Journal

    async def publish(self, target: Target, n: int = 0) -> PublishResult:
        return await self.journal.publish(target, "demo.n", {"n": n})


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    if request.param == "memory":
        journal = MemoryJournal(LIMITS)
        hub = MemoryHub(journal)
        yield Rig(hub, journal)
        await hub.aclose()
        return
    client = aioredis.Redis.from_url(REDIS_URL)
    pool = aioredis.ConnectionPool.from_url(REDIS_URL, socket_timeout=None, health_check_interval=0)
    redis_hub = RedisHub(pool.make_connection, subscribe_timeout_s=DEADLINE_S)
    await redis_hub.start()
    redis_journal = RedisJournal(client, LIMITS)
    yield Rig(redis_hub, redis_journal)
    await redis_hub.aclose()
    await redis_journal.aclose()
    await pool.disconnect()


async def take(sub: Subscription, count: int) -> list[Live]:
    """The next ``count`` items of ``sub`` (fewer only if it ended)."""
    got: list[Live] = []
    async with asyncio.timeout(DEADLINE_S):
        while len(got) < count and not (got and not isinstance(got[-1], LiveMessage)):
            got += await sub.take()
    return got


def ids(items: list[Live]) -> list[str]:
    return [str(m.id) for m in items if isinstance(m, LiveMessage)]


async def test_hubs_report_connected_and_no_reconnects_when_started(rig: Rig) -> None:
    assert rig.hub.connected
    assert rig.hub.reconnects == 0


async def test_a_message_published_right_after_subscribe_is_delivered(rig: Rig, unique: str):
    t = Target.user(unique)
    async with rig.hub.subscribe([t.channel], 10) as sub:
        sent = await rig.publish(t)
        (got,) = await take(sub, 1)
    assert isinstance(got, LiveMessage)
    assert (got.channel, got.id, got.previous, got.epoch) == (
        t.channel,
        sent.id,
        None,
        sent.epoch,
    )
    assert orjson.loads(got.envelope)["id"] == str(sent.id)


async def test_messages_arrive_in_publish_order_chained_by_previous(rig: Rig, unique: str):
    t = Target.topic(unique)
    async with rig.hub.subscribe([t.channel], 100) as sub:
        sent = [await rig.publish(t, i) for i in range(20)]
        got = await take(sub, 20)
    assert ids(got) == [str(r.id) for r in sent]
    assert [m.previous for m in got if isinstance(m, LiveMessage)] == [None] + [
        r.id for r in sent[:-1]
    ]


async def test_one_subscription_on_several_channels_gets_them_interleaved_in_order(
    rig: Rig, unique: str
):
    a, b = Target.user(unique), Target.topic(unique)
    async with rig.hub.subscribe([a.channel, b.channel], 100) as sub:
        sent = [await rig.publish(a if i % 2 else b, i) for i in range(10)]
        got = await take(sub, 10)
    assert [(m.channel, m.id) for m in got if isinstance(m, LiveMessage)] == [
        (r.target.channel, r.id) for r in sent
    ]


async def test_a_subscriber_gets_only_its_own_channels(rig: Rig, unique: str):
    mine, other = Target.user(unique), Target.user(unique + "-other")
    async with rig.hub.subscribe([mine.channel], 10) as sub:
        await rig.publish(other)
        sent = await rig.publish(mine)
        got = await take(sub, 1)
    assert ids(got) == [str(sent.id)]


async def test_every_subscriber_of_a_channel_gets_every_message(rig: Rig, unique: str):
    t = Target.topic(unique)
    async with rig.hub.subscribe([t.channel], 10) as a, rig.hub.subscribe([t.channel], 10) as b:
        sent = [await rig.publish(t, i) for i in range(3)]
        got_a, got_b = await take(a, 3), await take(b, 3)
    assert ids(got_a) == ids(got_b) == [str(r.id) for r in sent]


async def test_one_subscriber_leaving_never_cuts_off_another(rig: Rig, unique: str):
    t = Target.topic(unique)
    async with rig.hub.subscribe([t.channel], 10) as staying:
        async with rig.hub.subscribe([t.channel], 10) as leaving:
            await rig.publish(t, 0)
            await take(leaving, 1)
        sent = await rig.publish(t, 1)
        got = await take(staying, 2)
        assert ids(got)[-1] == str(sent.id)
        assert leaving.pending() == 0  # it left before the second message


async def test_a_subscriber_leaving_by_an_exception_is_unsubscribed(rig: Rig, unique: str):
    t = Target.topic(unique)
    with pytest.raises(RuntimeError, match="handler failed"):
        async with rig.hub.subscribe([t.channel], 10) as failed:
            raise RuntimeError("handler failed")
    async with rig.hub.subscribe([t.channel], 10) as probe:
        sent = await rig.publish(t)
        assert ids(await take(probe, 1)) == [str(sent.id)]
    # The probe got it, so the failed subscription would have too if still registered.
    assert failed.pending() == 0


async def test_a_channel_can_be_subscribed_again_after_everyone_left(rig: Rig, unique: str):
    t = Target.user(unique)
    for i in range(3):
        async with rig.hub.subscribe([t.channel], 10) as sub:
            sent = await rig.publish(t, i)
            assert ids(await take(sub, 1)) == [str(sent.id)]


async def test_a_full_queue_becomes_one_overflow_and_then_nothing(rig: Rig, unique: str):
    t = Target.user(unique)
    async with (
        rig.hub.subscribe([t.channel], 2) as slow,
        rig.hub.subscribe([t.channel], 100) as probe,
    ):
        for i in range(3):
            await rig.publish(t, i)
        await take(probe, 3)  # everything was offered to the slow one too
        assert slow.closed
        assert await take(slow, 1) == [OVERFLOW]
        sent = await rig.publish(t, 3)
        assert ids(await take(probe, 1)) == [str(sent.id)]
        assert slow.pending() == 0


async def test_close_all_ends_every_subscription_with_close(rig: Rig, unique: str):
    a, b = Target.user(unique), Target.topic(unique)
    async with rig.hub.subscribe([a.channel], 10) as one, rig.hub.subscribe([b.channel], 10) as two:
        await rig.publish(a)
        await take(one, 1)
        rig.hub.close_all()
        assert await take(one, 1) == [CLOSE]
        assert await take(two, 1) == [CLOSE]
        # The hub itself still works, and the closed subscriptions get nothing more.
        async with rig.hub.subscribe([a.channel, b.channel], 10) as later:
            sent = [await rig.publish(a), await rig.publish(b)]
            assert ids(await take(later, 2)) == [str(r.id) for r in sent]
        assert one.pending() == 0 and two.pending() == 0

"""The Redis hub under connection loss, against real Redis.

Each test targets a race found in an earlier hub that shared redis-py's PubSub
between tasks: a leave during reconnect killed the reader for good; a subscribe
during reconnect was never sent; an UNSUBSCRIBE could overtake a newer SUBSCRIBE.
Reconnecting is slowed to 200 ms (as on a busy host or a remote Redis) so the
windows are wide enough to hit every time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection

from herald.api.state import hub_connection_factory
from herald.journal.base import JournalLimits
from herald.journal.positions import Target
from herald.journal.redis import RedisJournal
from herald.journal.runtime.settings import Settings
from herald.streams.hub import LiveMessage, Signal
from herald.streams.hub_redis import RedisHub
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.integration


@pytest.fixture
def slow_connect(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    original = Connection._connect

    async def slow(self: Connection) -> None:
        await asyncio.sleep(0.2)  # a slow network, not a wait for an event
        await original(self)

    monkeypatch.setattr(Connection, "_connect", slow)
    yield


@pytest.fixture
async def hub() -> AsyncIterator[RedisHub]:
    hub = RedisHub(hub_connection_factory(Settings(redis_url=REDIS_URL)), ping_interval_s=1)
    await hub.start()
    yield hub
    await hub.aclose()


async def until(predicate: Callable[[], bool], seconds: float = 5) -> None:
    """Yield to the loop until the hub's state changes (it exposes no event for it)."""
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0)


async def kill_pubsub(admin: aioredis.Redis, hub: RedisHub) -> None:
    await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    await until(lambda: not hub.connected)


async def test_a_leave_during_reconnect_does_not_kill_the_reader(
    hub: RedisHub, real_redis: aioredis.Redis, unique: str, slow_connect: None
):
    leaving = hub.subscribe([f"herald:{{u:{unique}-a}}"], 10)
    await leaving.__aenter__()
    await kill_pubsub(real_redis, hub)
    await leaving.__aexit__(None, None, None)  # UNSUBSCRIBE while reconnecting
    await until(lambda: hub.connected)
    assert hub._reader is not None and not hub._reader.done()
    async with hub.subscribe([f"herald:{{u:{unique}-b}}"], 10):
        pass


async def test_a_subscribe_during_reconnect_is_confirmed_promptly(
    hub: RedisHub, real_redis: aioredis.Redis, unique: str, slow_connect: None
):
    await kill_pubsub(real_redis, hub)
    began = time.monotonic()
    async with hub.subscribe([f"herald:{{u:{unique}}}"], 10):
        took = time.monotonic() - began
    assert took < 2, f"subscribing during a reconnect took {took:.2f}s"


async def test_rejoining_a_channel_right_after_leaving_keeps_it_live(
    hub: RedisHub, real_redis: aioredis.Redis, unique: str
):
    channel = f"herald:{{u:{unique}}}"
    first = hub.subscribe([channel], 10)
    await first.__aenter__()
    leave = asyncio.ensure_future(first.__aexit__(None, None, None))
    async with hub.subscribe([channel], 10) as sub:  # joins while the leave is in flight
        await leave
        ((_, count),) = await real_redis.pubsub_numsub(channel)
        assert count == 1, "Redis must still deliver this channel"
        await real_redis.publish(channel, b'e  {"specversion":"1.0","id":"1-0"}')
        async with asyncio.timeout(5):
            (item,) = await sub.take()
        assert isinstance(item, LiveMessage)


async def test_reconnect_tells_subscribers_to_resync(
    hub: RedisHub, real_redis: aioredis.Redis, unique: str
):
    async with hub.subscribe([f"herald:{{u:{unique}}}"], 10) as sub:
        before = hub.reconnects
        await kill_pubsub(real_redis, hub)
        async with asyncio.timeout(10):
            assert await sub.take() == [Signal.RESYNC]
        assert hub.reconnects == before + 1


async def test_a_failed_fan_out_tells_subscribers_to_resync(
    hub: RedisHub, real_redis: aioredis.Redis, unique: str, monkeypatch: pytest.MonkeyPatch
):
    # Messages the hub read but could not hand over are in the journal: nothing is lost
    # if the subscribers re-read it, as after a reconnect.
    target = Target.user(unique)
    journal = RedisJournal(real_redis, JournalLimits())
    failed = asyncio.Event()

    def broken(burst: object, step: int) -> Iterator[int]:
        failed.set()
        raise RuntimeError("a bug in the fan-out")

    async with hub.subscribe([target.channel], 10) as sub:
        monkeypatch.setattr(hub._registry, "deliver_in_steps", broken)
        await journal.publish(target, "demo.n", {"n": 1})
        async with asyncio.timeout(10):
            await failed.wait()
            assert await sub.take() == [Signal.RESYNC]
        monkeypatch.undo()
        await journal.publish(target, "demo.n", {"n": 2})  # and the hub delivers again
        async with asyncio.timeout(10):
            (message,) = await sub.take()
        assert isinstance(message, LiveMessage) and message.previous is not None

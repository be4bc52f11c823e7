"""Against real Redis: a publish is one command on the wire, and subscribers get
``(epoch, previous id, envelope)`` with the envelope byte-identical to the journal's."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import redis.asyncio as aioredis

from herald.journal.base import JournalLimits
from herald.journal.positions import ZERO_ID, Target
from herald.journal.redis import RedisJournal
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.integration


async def _until(aiter, predicate):
    async with asyncio.timeout(5):
        async for item in aiter:
            if predicate(item):
                return item
    raise AssertionError("unreachable")


async def test_one_publish_is_one_command_on_the_wire(unique: str):
    # One connection only, so every command of the journal comes from one address.
    client = aioredis.Redis.from_pool(
        aioredis.ConnectionPool.from_url(REDIS_URL, max_connections=1)
    )
    journal = RedisJournal(client, JournalLimits())
    target = Target.user(unique)
    await journal.publish(target, "demo.warm", {})  # loads the script
    watcher = aioredis.Redis.from_url(REDIS_URL)
    seen: list[dict[str, object]] = []
    async with watcher.monitor() as monitor:
        listener = monitor.listen()
        await journal.publish(target, "demo.once", {"n": 1})
        await client.echo(f"done-{unique}")
        async with asyncio.timeout(5):
            async for cmd in listener:
                # Only this test uses `unique`: its commands, and the script's, name it.
                if unique in cmd["command"]:
                    seen.append(cmd)
                if cmd["command"].startswith("ECHO") and unique in cmd["command"]:
                    break
    wire = [c["command"].split()[0] for c in seen if c["client_type"] != "lua"]
    inside = [c["command"].split()[0] for c in seen if c["client_type"] == "lua"]
    assert wire == ["EVALSHA", "ECHO"], seen
    assert "XADD" in inside and "PUBLISH" in inside
    await watcher.aclose()
    await journal.aclose()


async def test_subscriber_receives_envelope_with_previous_id(
    real_redis: aioredis.Redis, unique: str
):
    journal = RedisJournal(real_redis, JournalLimits())
    target = Target.topic(unique)
    pubsub = real_redis.pubsub()
    await pubsub.subscribe(target.channel)
    await _until(pubsub.listen(), lambda m: m["type"] == "subscribe")
    first = await journal.publish(target, "printer.status", {"online": True})
    second = await journal.publish(target, "printer.status", {"online": False})
    frames = []
    async with asyncio.timeout(5):
        async for m in pubsub.listen():
            if m["type"] == "message":
                frames.append(m["data"].split(b" ", 2))
                if len(frames) == 2:
                    break
    stored = await journal.read_after(target, ZERO_ID, limit=10)
    (e1, p1, env1), (e2, p2, env2) = frames
    assert e1 == e2 == first.epoch.encode()
    assert p1 == b"" and p2 == str(first.id).encode()
    assert [env1, env2] == [s.envelope for s in stored.entries]
    assert orjson.loads(env2)["id"] == str(second.id)
    await pubsub.aclose()


async def test_lost_script_is_reloaded_without_double_publishing(
    real_redis: aioredis.Redis, unique: str
):
    from herald.journal.base import PublishRequest

    journal = RedisJournal(real_redis, JournalLimits())
    target = Target.user(unique)
    await real_redis.script_flush()
    results = await journal.publish_many(
        [PublishRequest(target, "demo.n", {"i": i}) for i in range(5)]
    )
    assert len({r.id for r in results}) == 5
    assert (await journal.info(target)).length == 5

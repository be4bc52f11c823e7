"""The rest of Herald's Redis use on Redis Cluster: chat message streams (their
script ``SPUBLISH``es to the message's channel, in the counter's slot) and the
retention job's ``SCAN``, which must visit every primary, not the one it asked.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from herald.journal.keys import stream_key_pattern
from herald.journal.maintenance.cutoff import Cutoff
from herald.journal.messages.keys import channel_of
from herald.journal.messages.producer import MessageStreams, new_writer
from herald.journal.positions import Target
from herald.journal.runtime.settings import Settings
from herald.streams.hub import LiveMessage
from herald.streams.hub_cluster import ShardedConnections
from herald.streams.hub_redis import RedisHub
from herald.workers.maintenance.retention import trim_streams
from tests.rediscluster import LocalCluster

pytestmark = pytest.mark.integration

DEADLINE_S = 10


@pytest.fixture
async def hub(cluster_settings: Settings) -> AsyncIterator[RedisHub]:
    hub = RedisHub(ShardedConnections.from_settings(cluster_settings, ping_interval_s=1))
    await hub.start()
    yield hub
    await hub.aclose()


async def test_chat_message_events_are_numbered_and_delivered_by_sharded_pub_sub(
    cluster_client: aioredis.Redis,
    cluster_settings: Settings,
    engine: AsyncEngine,
    hub: RedisHub,
) -> None:
    streams = MessageStreams(
        engine=engine,
        redis=cluster_client,
        writer=new_writer(cluster_settings, engine),  # not started: rows stay buffered
        settings=cluster_settings,
    )
    messages = [uuid.uuid4() for _ in range(6)]  # six counters: spread over the shards
    async with hub.subscribe([channel_of(m) for m in messages], 100) as sub:
        for m in messages:
            rows, _ = await streams.publish(m, [("answer", {"i": 0}), ("end", {})], floor=-1)
            assert [r.seq for r in rows] == [0, 1]
        got: list[LiveMessage] = []
        async with asyncio.timeout(DEADLINE_S):
            while len(got) < 2 * len(messages):
                got += [x for x in await sub.take() if isinstance(x, LiveMessage)]
    for m in messages:
        assert [str(x.id) for x in got if x.channel == channel_of(m)] == ["0-0", "1-0"]


async def test_retention_scans_every_primary(
    cluster_client: aioredis.Redis, local_cluster: LocalCluster, unique: str
) -> None:
    shards = local_cluster.users_on_every_shard(unique)
    targets = [Target.user(names[0]) for names in shards.values()]
    assert len(targets) == 3
    for t in targets:  # entries from long ago, and one from now
        await cluster_client.xadd(t.stream_key, {"t": "old"}, id="1000-0")
        await cluster_client.xadd(t.stream_key, {"t": "new"})
    cutoff = Cutoff(datetime.now(UTC).replace(year=2000))
    counts = await trim_streams(cluster_client, [stream_key_pattern("u")], cutoff, batch=100)
    assert counts["deleted"] >= len(targets)
    for t in targets:
        rows = await cluster_client.xrange(t.stream_key)
        assert [f[b"t"] for _, f in rows] == [b"new"], t

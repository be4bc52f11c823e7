"""The hub on Redis Cluster: the hub contract (``tests/contract/test_hub_contract.py``)
on sharded pub/sub, then what only a cluster has: one connection per primary,
channels on every shard, a killed shard connection and a failover, each followed
by a re-subscribe and one RESYNC, never by silence.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import psutil
import pytest
import redis.asyncio as aioredis

from herald.journal.base import JournalUnavailable, PublishResult
from herald.journal.positions import Target
from herald.journal.redis import RedisJournal
from herald.journal.runtime.cluster import GatedRedisCluster
from herald.journal.runtime.settings import Settings
from herald.streams.hub import LiveMessage, Signal, Subscription
from herald.streams.hub_cluster import ShardedConnection, ShardedConnections
from herald.streams.hub_redis import RedisHub
from tests.contract.test_hub_contract import *  # noqa: F403
from tests.contract.test_hub_contract import DEADLINE_S, LIMITS, Rig
from tests.rediscluster import LocalCluster

pytestmark = pytest.mark.integration

# Across shards there is no one order: each primary's connection is its own
# sequence.  Per channel the order holds (the cluster version of this test below).
del test_one_subscription_on_several_channels_gets_them_interleaved_in_order  # noqa: F821


async def cluster_hub(settings: Settings, client: aioredis.Redis) -> RedisHub:
    """As ``herald serve`` builds it: on the links of the command client."""
    assert isinstance(client, GatedRedisCluster)
    connections = ShardedConnections.from_settings(settings, ping_interval_s=1, links=client.links)
    hub = RedisHub(connections, ping_interval_s=1, subscribe_timeout_s=DEADLINE_S)
    await hub.start()
    return hub


@pytest.fixture
async def rig(cluster_settings: Settings, cluster_client: aioredis.Redis) -> AsyncIterator[Rig]:
    """Replaces the contract's parametrised fixture: the cluster implementation only."""
    hub = await cluster_hub(cluster_settings, cluster_client)
    yield Rig(hub, RedisJournal(cluster_client, LIMITS))
    await hub.aclose()


@pytest.fixture
async def hub(
    cluster_settings: Settings, cluster_client: aioredis.Redis
) -> AsyncIterator[RedisHub]:
    hub = await cluster_hub(cluster_settings, cluster_client)
    yield hub
    await hub.aclose()


def users_on_every_shard(cluster: LocalCluster, prefix: str) -> dict[int, str]:
    """One user name per primary port."""
    return {port: names[0] for port, names in cluster.users_on_every_shard(prefix).items()}


async def until(predicate: Callable[[], bool], seconds: float = DEADLINE_S) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110 - the hub exposes no event for it
            await asyncio.sleep(0.01)


async def next_message(sub: Subscription) -> LiveMessage:
    async with asyncio.timeout(DEADLINE_S):
        while True:
            for item in await sub.take():
                if isinstance(item, LiveMessage):
                    return item


async def test_the_hub_and_the_commands_share_one_connection_per_primary(
    hub: RedisHub, local_cluster: LocalCluster, cluster_client: aioredis.Redis, unique: str
) -> None:
    conn = hub._conn
    assert isinstance(conn, ShardedConnection)
    primaries = sorted(p for p, _ in local_cluster.pairs())
    assert sorted(port for _, port in conn.primaries) == primaries
    journal = RedisJournal(cluster_client, LIMITS)
    users = users_on_every_shard(local_cluster, unique)
    channels = [Target.user(u).channel for u in users.values()]
    async with hub.subscribe(channels, 100) as sub:
        for port in primaries:  # each primary: one client, subscribed and commanded
            listing = local_cluster.cli(port, "CLIENT", "LIST", "TYPE", "pubsub")
            assert len(listing.strip().splitlines()) == 1, listing
        await asyncio.gather(*(cluster_client.get(f"{unique}-{i}") for i in range(200)))
        mine = _sockets_to(set(local_cluster.ports))
        assert mine == len(primaries), f"{mine} connections for {len(primaries)} primaries"
        for user in users.values():
            sent = await journal.publish(Target.user(user), "demo.n", {"n": 1})
            got = await next_message(sub)
            assert (got.channel, got.id) == (Target.user(user).channel, sent.id)


async def test_a_killed_shard_connection_resubscribes_and_resyncs(
    hub: RedisHub, local_cluster: LocalCluster, cluster_client: aioredis.Redis, unique: str
) -> None:
    users = users_on_every_shard(local_cluster, unique)
    journal = RedisJournal(cluster_client, LIMITS)
    victim, user = next(iter(users.items()))
    async with hub.subscribe([Target.user(u).channel for u in users.values()], 100) as sub:
        before = hub.reconnects
        local_cluster.cli(victim, "CLIENT", "KILL", "TYPE", "pubsub")
        async with asyncio.timeout(DEADLINE_S):
            assert await sub.take() == [Signal.RESYNC]
        assert hub.reconnects == before + 1 and hub.connected
        sent = await journal.publish(Target.user(user), "demo.n", {"n": 2})
        assert (await next_message(sub)).id == sent.id


async def test_a_failover_resubscribes_on_the_promoted_replica_and_resyncs(
    hub: RedisHub, local_cluster: LocalCluster, cluster_client: aioredis.Redis, unique: str
) -> None:
    users = users_on_every_shard(local_cluster, unique)
    journal = RedisJournal(cluster_client, LIMITS)
    old_primary = next(iter(users))
    async with hub.subscribe([Target.user(u).channel for u in users.values()], 100) as sub:
        before = hub.reconnects
        promoted = await asyncio.to_thread(local_cluster.failover, old_primary)
        async with asyncio.timeout(DEADLINE_S):
            assert await sub.take() == [Signal.RESYNC]
        await until(lambda: hub.connected)
        assert hub.reconnects == before + 1
        conn = hub._conn
        assert isinstance(conn, ShardedConnection)
        assert promoted in [port for _, port in conn.primaries]
        for name in users.values():  # every shard delivers again, the failed-over one too
            sent = await journal.publish(Target.user(name), "demo.n", {"n": 3})
            assert (await next_message(sub)).id == sent.id


async def test_one_subscription_on_several_shards_gets_each_channel_in_order(
    rig: Rig, local_cluster: LocalCluster, unique: str
) -> None:
    targets = [Target.user(u) for u in users_on_every_shard(local_cluster, unique).values()]
    async with rig.hub.subscribe([t.channel for t in targets], 100) as sub:
        sent = [await rig.publish(targets[i % len(targets)], i) for i in range(12)]
        got: list[LiveMessage] = []
        async with asyncio.timeout(DEADLINE_S):
            while len(got) < len(sent):
                got += [m for m in await sub.take() if isinstance(m, LiveMessage)]
    for t in targets:
        assert [m.id for m in got if m.channel == t.channel] == [
            r.id for r in sent if r.target == t
        ]


async def test_a_crashed_primary_is_followed_to_its_promoted_replica(
    hub: RedisHub, local_cluster: LocalCluster, cluster_client: aioredis.Redis, unique: str
) -> None:
    users = users_on_every_shard(local_cluster, unique)
    journal = RedisJournal(cluster_client, LIMITS)
    victim = next(iter(users))
    replica = dict(local_cluster.pairs())[victim]
    try:
        async with hub.subscribe([Target.user(u).channel for u in users.values()], 100) as sub:
            local_cluster.crash(victim)
            async with asyncio.timeout(30):  # node timeout (2 s) + election + backoff
                assert await sub.take() == [Signal.RESYNC]
            conn = hub._conn
            assert isinstance(conn, ShardedConnection) and hub.connected
            assert replica in [port for _, port in conn.primaries]
            assert victim not in [port for _, port in conn.primaries]
            for name in users.values():
                sent = await journal.publish(Target.user(name), "demo.n", {"n": 4})
                assert (await next_message(sub)).id == sent.id
    finally:
        await asyncio.to_thread(local_cluster.revive, victim)


async def test_a_frozen_primary_is_followed_to_its_promoted_replica(
    hub: RedisHub, local_cluster: LocalCluster, cluster_client: aioredis.Redis, unique: str
) -> None:
    """SIGSTOP keeps the node's sockets open and answers nothing: asking it for the
    slot map or connecting to it must not hold the hub up once its replica serves."""
    local_cluster.wait_healthy()
    users = users_on_every_shard(local_cluster, unique)
    journal = RedisJournal(cluster_client, LIMITS)
    victim = next(iter(users))
    replica = dict(local_cluster.pairs())[victim]
    async with hub.subscribe([Target.user(u).channel for u in users.values()], 100) as sub:
        local_cluster.freeze(victim)
        try:
            async with asyncio.timeout(30):  # node timeout (2 s) + election + backoff
                assert await sub.take() == [Signal.RESYNC]
                await until(lambda: hub.connected and replica in _primary_ports(hub), 30)
            assert victim not in _primary_ports(hub)
            for name in users.values():
                sent = await _publish_until_accepted(journal, Target.user(name), unique)
                assert (await next_message(sub)).id == sent.id
        finally:
            local_cluster.thaw(victim)
    await asyncio.to_thread(local_cluster.wait_healthy, 30)


def _primary_ports(hub: RedisHub) -> list[int]:
    conn = hub._conn
    return [port for _, port in conn.primaries] if isinstance(conn, ShardedConnection) else []


def _sockets_to(ports: set[int]) -> int:
    """Established TCP connections from this process to these ports."""
    return sum(
        1
        for c in psutil.Process().net_connections("tcp")
        if c.raddr and c.raddr.port in ports and c.status == psutil.CONN_ESTABLISHED
    )


async def _publish_until_accepted(journal: RedisJournal, target: Target, key: str) -> PublishResult:
    """As a producer does: the command client may still send the first publishes to
    the frozen node (its slot map is its own) and answer "unavailable" until it has
    read the new map; retried with one idempotency key, the event is stored once."""
    async with asyncio.timeout(30):
        while True:
            try:
                return await journal.publish(
                    target, "demo.n", {"n": 5}, idempotency_key=f"{key}-{target.name}"
                )
            except JournalUnavailable:
                continue  # each attempt waits out its own deadline

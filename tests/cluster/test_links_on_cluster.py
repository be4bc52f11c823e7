"""The cluster command client speaks through one connection per node
(``herald.journal.runtime.multiplex``): many commands in flight share it, each gets
its own reply, and a broken or frozen connection fails only what it owes."""

from __future__ import annotations

import asyncio
import os
import time

import psutil
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from herald.journal.runtime.cluster import GatedRedisCluster, make_cluster
from herald.journal.runtime.settings import Settings
from tests.rediscluster import LocalCluster

pytestmark = pytest.mark.integration


def _keys_on(cluster: LocalCluster, primary: int, prefix: str, n: int) -> list[str]:
    keys = []
    for i in range(100_000):
        key = f"{prefix}-{i}"
        if cluster.primary_of(int(cluster.cli(primary, "CLUSTER", "KEYSLOT", key))) == primary:
            keys.append(key)
            if len(keys) == n:
                return keys
    raise AssertionError(f"not {n} keys of {prefix} on {primary}")


def _sockets_to(ports: set[int]) -> int:
    return sum(
        1
        for c in psutil.Process(os.getpid()).net_connections("tcp")
        if c.raddr and c.raddr.port in ports and c.status == psutil.CONN_ESTABLISHED
    )


async def test_many_commands_in_flight_share_one_socket_per_node_and_get_their_own_replies(
    local_cluster: LocalCluster, cluster_client: aioredis.Redis, unique: str
) -> None:
    local_cluster.wait_healthy()
    assert isinstance(cluster_client, GatedRedisCluster) and cluster_client.links is not None
    keys = [f"{unique}-{i}" for i in range(300)]
    await asyncio.gather(*(cluster_client.set(k, k.encode()) for k in keys))
    # 1,200 calls at once, every shard: each reply is its own command's.
    got = await asyncio.gather(*(cluster_client.get(k) for k in keys * 4))
    assert got == [k.encode() for k in keys * 4]
    pipe = cluster_client.pipeline(transaction=False)
    for k in keys[:50]:
        pipe.incr(k)  # an error reply in the middle of a pipeline stays in its place
    pipe.get(keys[0])
    results = await pipe.execute(raise_on_error=False)
    assert all(isinstance(r, ResponseError) for r in results[:50]), results[:50]
    assert results[50] == keys[0].encode()
    primaries = {p for p, _ in local_cluster.pairs()}
    assert _sockets_to(set(local_cluster.ports)) == len(primaries)


async def test_a_killed_link_fails_what_it_owes_and_reopens(
    local_cluster: LocalCluster, cluster_client: aioredis.Redis, unique: str
) -> None:
    local_cluster.wait_healthy()
    assert isinstance(cluster_client, GatedRedisCluster) and cluster_client.links is not None
    primary = next(p for p, _ in local_cluster.pairs())
    (key,) = _keys_on(local_cluster, primary, unique, 1)
    await cluster_client.set(key, b"1")
    link = cluster_client.links.get("127.0.0.1", primary)
    opened = link.opened
    local_cluster.cli(primary, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "no")
    # The next call may meet the dead socket: the client retries on a new one.
    assert await cluster_client.get(key) == b"1"
    assert link.opened == opened + 1
    assert await cluster_client.incr(key) == 2


async def test_a_frozen_node_fails_its_link_within_the_timeout_and_the_link_recovers(
    local_cluster: LocalCluster, cluster_settings: Settings, unique: str
) -> None:
    local_cluster.wait_healthy()
    settings = cluster_settings.model_copy(update={"redis_socket_timeout_s": 0.4})
    client = make_cluster(settings)
    assert isinstance(client, GatedRedisCluster) and client.links is not None
    frozen = next(p for p, _ in local_cluster.pairs())
    (key,) = _keys_on(local_cluster, frozen, unique, 1)
    try:
        await client.set(key, b"1")
        link = client.links.get("127.0.0.1", frozen)
        opened = link.opened
        local_cluster.freeze(frozen)
        try:
            began = time.monotonic()
            results = await asyncio.gather(
                *(client.get(key) for _ in range(20)), return_exceptions=True
            )
            assert all(isinstance(r, RedisError) for r in results), results
            assert time.monotonic() - began < 1.5
            # The owed replies outlive the link's timeout: it drops the socket.
            async with asyncio.timeout(5):
                while link.is_connected:  # noqa: ASYNC110 - the link has no event for it
                    await asyncio.sleep(0.02)
        finally:
            local_cluster.thaw(frozen)
        assert await client.get(key) == b"1"
        assert link.is_connected and link.opened == opened + 1
    finally:
        await client.aclose()
    await asyncio.to_thread(local_cluster.wait_healthy, 30)


async def test_a_blocking_command_gets_a_socket_of_its_own_and_holds_up_nobody(
    local_cluster: LocalCluster, cluster_client: aioredis.Redis, unique: str
) -> None:
    """A task handler's BLPOP on the shared client: on the shared socket it would
    hold every later command to that node until it returned."""
    local_cluster.wait_healthy()
    primary = next(p for p, _ in local_cluster.pairs())
    waiting, other = _keys_on(local_cluster, primary, unique, 2)
    await cluster_client.set(other, b"1")
    pop = asyncio.create_task(cluster_client.blpop([waiting], timeout=3))
    async with asyncio.timeout(5):
        while "cmd=blpop" not in local_cluster.cli(primary, "CLIENT", "LIST"):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    began = time.monotonic()
    for _ in range(20):
        assert await cluster_client.get(other) == b"1"
    assert time.monotonic() - began < 1.0, "commands waited behind the BLPOP"
    await cluster_client.rpush(waiting, b"x")
    assert tuple(await pop) == (waiting.encode(), b"x")

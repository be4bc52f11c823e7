"""A frozen primary (SIGSTOP: its sockets stay open, nothing answers) must not hang
the cluster command client: every call ends within ``HERALD_REDIS_SOCKET_TIMEOUT_S``,
as on one server, and the other shards keep answering.  The freeze is shorter than
the cluster's node timeout, so no failover changes the topology of later tests."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from herald.journal.runtime.cluster import make_cluster
from herald.journal.runtime.settings import Settings
from tests.rediscluster import LocalCluster

pytestmark = pytest.mark.integration

TIMEOUT_S = 0.4


def _key_on(cluster: LocalCluster, primary: int, prefix: str) -> str:
    for i in range(10_000):
        key = f"{prefix}-{i}"
        if cluster.primary_of(int(cluster.cli(primary, "CLUSTER", "KEYSLOT", key))) == primary:
            return key
    raise AssertionError(f"no key of {prefix} on {primary}")


async def _warm_up(client: Redis, *keys: str) -> None:
    """The first call also initialises the client (CLUSTER SLOTS, then COMMAND, whose
    reply is large): on a loaded machine that may outlast the short timeout under
    test, so it is tried again until it answers (30 s deadline)."""
    async with asyncio.timeout(30):
        while True:
            try:
                for key in keys:
                    await client.set(key, b"1")
                return
            except RedisError:
                continue


async def test_a_frozen_primary_fails_its_calls_in_time_and_spares_the_others(
    local_cluster: LocalCluster, cluster_settings: Settings
) -> None:
    local_cluster.wait_healthy()
    frozen, healthy = (port for port, _ in local_cluster.pairs()[:2])
    on_frozen = _key_on(local_cluster, frozen, "frozen")
    on_healthy = _key_on(local_cluster, healthy, "healthy")
    settings = cluster_settings.model_copy(update={"redis_socket_timeout_s": TIMEOUT_S})
    client = make_cluster(settings)
    try:
        await _warm_up(client, on_frozen, on_healthy)
        local_cluster.freeze(frozen)
        try:
            began = time.monotonic()
            # Calls stuck on the frozen shard hold every slot of the client's gate...
            stuck = [asyncio.create_task(client.get(on_frozen)) for _ in range(3)]
            results = await asyncio.gather(*stuck, return_exceptions=True)
            took = time.monotonic() - began
            assert all(isinstance(r, RedisError) for r in results), results
            assert took < TIMEOUT_S + 1.0, f"calls to a frozen shard took {took:.2f} s"
            # ...only until their deadline: the healthy shard answers meanwhile.
            began = time.monotonic()
            assert await client.get(on_healthy) == b"1"
            assert time.monotonic() - began < TIMEOUT_S + 1.0
        finally:
            local_cluster.thaw(frozen)
        local_cluster.wait_healthy()
    finally:
        await client.aclose()

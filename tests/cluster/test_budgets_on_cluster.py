"""The budget contract (connection leases, replay budget) on Redis Cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from herald.streams.budget_redis import RedisBudgets
from herald.streams.keys import connections_key, replays_key
from tests.contract.test_budgets_contract import *  # noqa: F403
from tests.contract.test_budgets_contract import DEADLINE_S, LIMITS, Rig, redis_now_s

pytestmark = pytest.mark.integration


@pytest.fixture
async def rig(cluster_client: aioredis.Redis, unique: str) -> AsyncIterator[Rig]:
    """Replaces the contract's parametrised fixture: the cluster implementation only."""

    async def wait_on_redis_clock(seconds: float) -> None:
        end = await redis_now_s(cluster_client) + seconds
        async with asyncio.timeout(DEADLINE_S):
            while await redis_now_s(cluster_client) < end:
                pass

    yield Rig(
        RedisBudgets(cluster_client, LIMITS),
        wait_on_redis_clock,
        lambda limits: RedisBudgets(cluster_client, limits),
    )
    for user in (unique, unique + "-b"):
        await cluster_client.delete(connections_key(user), replays_key(user))

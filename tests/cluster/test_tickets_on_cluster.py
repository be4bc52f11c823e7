"""The SSE ticket contract (single-use tickets, sessions) on Redis Cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from herald.api.tickets import RedisTicketStore
from tests.contract.test_tickets_contract import *  # noqa: F403
from tests.contract.test_tickets_contract import DEADLINE_S, TTL_S, Rig, redis_now_s

pytestmark = pytest.mark.integration


@pytest.fixture
async def rig(cluster_client: aioredis.Redis) -> AsyncIterator[Rig]:
    """Replaces the contract's parametrised fixture: the cluster implementation only."""

    async def wait_on_redis_clock(seconds: float) -> None:
        end = await redis_now_s(cluster_client) + seconds
        async with asyncio.timeout(DEADLINE_S):
            while await redis_now_s(cluster_client) < end:
                pass

    yield Rig(RedisTicketStore(cluster_client, TTL_S), wait_on_redis_clock)

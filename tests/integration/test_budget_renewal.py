"""Renewing many users' leases in Redis when some round trips fail: the other
batches still go through, and only a renewal that reached no one raises."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from herald.streams.budget import BudgetLimits
from herald.streams.budget_redis import RENEW_BATCH, RedisBudgets
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.integration

LIMITS = BudgetLimits(max_connections=3, lease_s=30)


class DroppingBudgets(RedisBudgets):
    """Loses the round trips whose numbers (from 1) it is given."""

    def __init__(self, client: aioredis.Redis, drop: set[int]) -> None:
        super().__init__(client, LIMITS)
        self.drop = drop
        self.calls = 0

    async def _renew_batch(self, batch: list[tuple[str, Sequence[str]]]) -> list[object]:
        self.calls += 1
        if self.calls in self.drop:
            raise RedisConnectionError("connection reset by peer")
        return await super()._renew_batch(batch)


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(REDIS_URL)
    yield c
    await c.aclose()


async def test_a_lost_batch_does_not_stop_the_others(client: aioredis.Redis, unique: str):
    budgets = DroppingBudgets(client, drop={1})
    users = [f"{unique}-{i}" for i in range(RENEW_BATCH + 1)]
    assert await budgets.renew({u: ["c1", "c2", "c3"] for u in users}) == RENEW_BATCH
    assert budgets.calls == 2
    # The first batch took nothing; the last user's renewal took its three slots.
    assert await budgets.acquire(users[0], ["c4"]) == 1
    assert await budgets.acquire(users[-1], ["c4"]) == 0


async def test_a_renewal_that_reached_no_one_raises(client: aioredis.Redis, unique: str):
    budgets = DroppingBudgets(client, drop={1, 2})
    users = [f"{unique}-{i}" for i in range(RENEW_BATCH + 1)]
    with pytest.raises(RedisConnectionError):
        await budgets.renew({u: ["c1"] for u in users})

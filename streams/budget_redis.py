"""Budgets in Redis: Lua scripts keep check-and-update atomic across processes."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from herald.journal.runtime.scripts import evalsha_pipelined
from herald.streams.budget import BudgetLimits
from herald.streams.keys import connections_key, replays_key

__all__ = ["RENEW_BATCH", "RedisBudgets"]

# Script calls per pipeline when renewing: one round trip each, and short enough
# that the event loop gets back to delivering between them.
RENEW_BATCH = 500


class RedisBudgets:
    def __init__(self, client: aioredis.Redis, limits: BudgetLimits) -> None:
        self.client = client
        self.limits = limits
        self._lease = client.register_script(
            resources.files("herald.streams").joinpath("lua/lease.lua").read_text()
        )
        self._replay = client.register_script(
            resources.files("herald.streams").joinpath("lua/replay_budget.lua").read_text()
        )

    async def acquire(self, user: str, conn_ids: list[str]) -> int:
        held = await self._lease(
            keys=[connections_key(user)],
            args=[self.limits.lease_s * 1000, self.limits.max_connections, *conn_ids],
        )
        return int(held)

    async def release(self, user: str, conn_id: str) -> None:
        await self.client.zrem(connections_key(user), conn_id)

    async def renew(self, held: Mapping[str, Sequence[str]]) -> int:
        """The lease script for every user, ``RENEW_BATCH`` calls per round trip (on
        Redis Cluster, the pipeline sends each call to its key's primary).  A batch
        whose round trip failed counts as failed whole."""
        users = list(held.items())
        failed = 0
        error: RedisError | OSError | None = None
        for start in range(0, len(users), RENEW_BATCH):
            batch = users[start : start + RENEW_BATCH]
            try:
                await self._renew_batch(batch)
            except (RedisError, OSError) as e:  # this batch only: the next may get through
                error = e
                failed += len(batch)
        if error is not None and failed == len(users):
            raise error
        return failed

    async def _renew_batch(self, batch: list[tuple[str, Sequence[str]]]) -> list[Any]:
        lease_ms, cap = self.limits.lease_s * 1000, self.limits.max_connections
        calls = [([connections_key(user)], [lease_ms, cap, *ids]) for user, ids in batch]
        return await evalsha_pipelined(self.client, self._lease, calls)

    async def charge_replay(self, user: str) -> float:
        wait_ms = await self._replay(
            keys=[replays_key(user)],
            args=[
                self.limits.replay_window_s * 1000,
                self.limits.replay_budget,
                secrets.token_hex(8),
            ],
        )
        return int(wait_ms) / 1000

"""Budgets in Redis: Lua scripts keep check-and-update atomic across processes."""

from __future__ import annotations

import secrets
from importlib import resources

import redis.asyncio as aioredis

from herald.streams.budget import BudgetLimits
from herald.streams.keys import connections_key, replays_key

__all__ = ["RedisBudgets"]


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

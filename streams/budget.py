"""Bounded work per user: concurrent connection slots and a replay budget.

Both live in Redis (shared by every process) with a memory twin for
``memory://`` mode and unit tests.  Slots are leases renewed by the process that
holds them (``LeaseKeeper``), so a killed process frees them within one lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["BudgetLimits", "Budgets", "LeaseKeeper", "MemoryBudgets", "retry_after_header"]

log = logging.getLogger("herald.budget")


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    max_connections: int = 8
    lease_s: int = 30
    replay_budget: int = 30
    replay_window_s: int = 60


class Budgets(Protocol):
    limits: BudgetLimits

    async def acquire(self, user: str, conn_ids: list[str]) -> int:
        """Take or renew slots for ``conn_ids``; returns how many hold a slot now."""
        ...

    async def release(self, user: str, conn_id: str) -> None: ...

    async def renew(self, held: Mapping[str, Sequence[str]]) -> int:
        """``acquire`` for many users at once (the periodic renewal of every slot a
        process holds), in as few round trips as the store allows; returns how many
        users' renewals failed.  Raises when the store cannot be reached at all."""
        ...

    async def charge_replay(self, user: str) -> float:
        """0 if the replay was charged, else the seconds to wait (nothing charged)."""
        ...


class MemoryBudgets:
    def __init__(
        self, limits: BudgetLimits, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._leases: dict[str, dict[str, float]] = {}
        self._replays: dict[str, deque[float]] = {}

    async def acquire(self, user: str, conn_ids: list[str]) -> int:
        now = self._clock()
        leases = self._leases.setdefault(user, {})
        for cid in [c for c, exp in leases.items() if exp <= now]:
            del leases[cid]
        held = 0
        for cid in conn_ids:
            if cid in leases or len(leases) < self.limits.max_connections:
                leases[cid] = now + self.limits.lease_s
                held += 1
        return held

    async def release(self, user: str, conn_id: str) -> None:
        self._leases.get(user, {}).pop(conn_id, None)

    async def renew(self, held: Mapping[str, Sequence[str]]) -> int:
        for user, ids in held.items():
            await self.acquire(user, list(ids))
        return 0

    async def charge_replay(self, user: str) -> float:
        now = self._clock()
        log_ = self._replays.setdefault(user, deque())
        while log_ and log_[0] <= now - self.limits.replay_window_s:
            log_.popleft()
        if len(log_) < self.limits.replay_budget:
            log_.append(now)
            return 0.0
        return max(0.001, log_[0] + self.limits.replay_window_s - now)


class LeaseKeeper:
    """Renews every slot this process holds, once per period, in batches (one
    round trip per few hundred users, not one per user: with 20,000 users of one
    connection each, a renewal one by one took half a second of CPU every period)."""

    def __init__(self, budgets: Budgets, *, period_s: float | None = None) -> None:
        self.budgets = budgets
        # A third of a lease: two renewals may fail before a slot lapses.
        self.period_s = period_s or max(1.0, budgets.limits.lease_s / 3)
        # (user, connection id) pairs, grouped by user only when renewing: a set
        # per user would cost more than the connection itself for most users.
        self._held: set[tuple[str, str]] = set()
        self._task: asyncio.Task[None] | None = None

    def new_id(self) -> str:
        return secrets.token_hex(8)

    def track(self, user: str, conn_id: str) -> None:
        self._held.add((user, conn_id))

    async def untrack(self, user: str, conn_id: str) -> None:
        self._held.discard((user, conn_id))
        await self._release(user, conn_id)

    async def _release(self, user: str, conn_id: str) -> None:
        with contextlib.suppress(Exception):  # the lease expires on its own anyway
            await self.budgets.release(user, conn_id)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="herald-lease-keeper")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period_s)
            by_user: dict[str, list[str]] = {}
            for user, conn_id in self._held:
                by_user.setdefault(user, []).append(conn_id)
            if not by_user:
                continue
            try:
                failed = await self.budgets.renew(by_user)
            except Exception as e:  # retried next period, well within the lease
                log.warning("renewing the connection leases failed: %s", e)
                continue
            finally:
                # A slot released while the renewal was under way was renewed again
                # by it: release it once more, so it stays free.
                for user, ids in by_user.items():
                    for conn_id in ids:
                        if (user, conn_id) not in self._held:
                            await self._release(user, conn_id)
            if failed:
                log.warning("renewing the connection leases of %d users failed", failed)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))

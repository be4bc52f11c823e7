"""The lease keeper renews every slot the process holds, all users in one call per
period, and keeps renewing after a failed period."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from herald.streams.budget import BudgetLimits, LeaseKeeper, MemoryBudgets


class RecordingBudgets(MemoryBudgets):
    """Memory budgets that record each renewal and fail the ones they are told to."""

    def __init__(self, fail_first: int = 0) -> None:
        super().__init__(BudgetLimits(max_connections=2, lease_s=30))
        self.renewals: asyncio.Queue[dict[str, list[str]]] = asyncio.Queue()
        self.fail_first = fail_first

    async def renew(self, held: Mapping[str, Sequence[str]]) -> int:
        self.renewals.put_nowait({user: sorted(ids) for user, ids in held.items()})
        if self.fail_first:
            self.fail_first -= 1
            raise ConnectionError("Redis is away")
        return await super().renew(held)


async def test_the_keeper_renews_every_held_slot_grouped_by_user() -> None:
    budgets = RecordingBudgets()
    keeper = LeaseKeeper(budgets, period_s=0.01)
    for user, conn_id in [("ann", "c1"), ("ann", "c2"), ("bob", "c1"), ("cy", "c9")]:
        keeper.track(user, conn_id)
    await keeper.untrack("cy", "c9")
    keeper.start()
    try:
        async with asyncio.timeout(5):
            renewed = await budgets.renewals.get()
    finally:
        await keeper.aclose()
    assert renewed == {"ann": ["c1", "c2"], "bob": ["c1"]}
    assert await budgets.acquire("ann", ["c3"]) == 0  # the renewal holds both of ann's slots


async def test_a_failed_renewal_is_tried_again_next_period() -> None:
    budgets = RecordingBudgets(fail_first=2)
    keeper = LeaseKeeper(budgets, period_s=0.01)
    keeper.track("ann", "c1")
    keeper.start()
    try:
        async with asyncio.timeout(5):
            attempts = [await budgets.renewals.get() for _ in range(3)]
    finally:
        await keeper.aclose()
    assert attempts == [{"ann": ["c1"]}] * 3
    assert budgets.fail_first == 0


class SlowBudgets(RecordingBudgets):
    """Each renewal waits until the test lets it finish; releases are recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()
        self.released: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def renew(self, held: Mapping[str, Sequence[str]]) -> int:
        self.renewals.put_nowait({user: sorted(ids) for user, ids in held.items()})
        await self.go.wait()
        return await super().renew(held)

    async def release(self, user: str, conn_id: str) -> None:
        await super().release(user, conn_id)
        self.released.put_nowait((user, conn_id))


async def test_a_slot_released_during_a_renewal_stays_free() -> None:
    budgets = SlowBudgets()
    keeper = LeaseKeeper(budgets, period_s=0.01)
    keeper.track("ann", "c1")
    keeper.start()
    try:
        async with asyncio.timeout(5):
            assert await budgets.renewals.get() == {"ann": ["c1"]}
            await keeper.untrack("ann", "c1")  # the stream closes mid-renewal
            assert await budgets.released.get() == ("ann", "c1")
            budgets.go.set()  # the renewal, which still lists c1, takes its slot again
            assert await budgets.released.get() == ("ann", "c1")  # and it is given back
    finally:
        await keeper.aclose()
    assert await budgets.acquire("ann", ["c2", "c3"]) == 2  # both slots are free

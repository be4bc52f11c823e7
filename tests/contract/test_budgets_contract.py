"""One contract, every budget store: MemoryBudgets and RedisBudgets (real Redis).

The contract (``herald.streams.budget.Budgets``): a user holds at most
``max_connections`` slots; renewing a held slot always works, a new one only under
the cap; a slot is free again once released or once its lease ran out unrenewed.
A user may replay ``replay_budget`` times per sliding ``replay_window_s``; a refused
replay is told how long to wait (within the window) and records nothing, so
retrying early never pushes its own window further out.  Users never share a
budget.

Time: the memory store reads an injected clock that the test moves; Redis reads its
own clock (``TIME``), which the test polls until the interval has passed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace

import pytest
import redis.asyncio as aioredis

from herald.streams.budget import BudgetLimits, Budgets, MemoryBudgets
from herald.streams.budget_redis import RENEW_BATCH, RedisBudgets
from herald.streams.keys import connections_key, replays_key
from tests.conftest import REDIS_URL

LIMITS = BudgetLimits(max_connections=3, lease_s=1, replay_budget=3, replay_window_s=1)
DEADLINE_S = 15  # generous: the machine may be loaded


@dataclass
class Rig:
    budgets: Budgets
    # Let ``seconds`` pass on the clock the store reads.
    elapse: Callable[[float], Awaitable[None]]
    # Another store of the same kind, on the same clock, with other limits.
    build: Callable[[BudgetLimits], Budgets]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def redis_now_s(client: aioredis.Redis) -> float:
    seconds, micros = await client.time()
    return int(seconds) + int(micros) / 1e6


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def rig(request: pytest.FixtureRequest, unique: str) -> AsyncIterator[Rig]:
    if request.param == "memory":
        clock = FakeClock()

        async def advance(seconds: float) -> None:
            clock.now += seconds

        yield Rig(
            MemoryBudgets(LIMITS, clock=clock), advance, lambda x: MemoryBudgets(x, clock=clock)
        )
        return
    client = aioredis.Redis.from_url(REDIS_URL)

    async def wait_on_redis_clock(seconds: float) -> None:
        # Poll Redis's own clock, the only one its scripts read.
        end = await redis_now_s(client) + seconds
        async with asyncio.timeout(DEADLINE_S):
            while await redis_now_s(client) < end:
                pass

    yield Rig(RedisBudgets(client, LIMITS), wait_on_redis_clock, lambda x: RedisBudgets(client, x))
    for user in (unique, unique + "-b"):
        await client.delete(connections_key(user), replays_key(user))
    await client.aclose()


# -- connection slots ------------------------------------------------------------


async def test_slots_are_granted_up_to_the_cap(rig: Rig, unique: str) -> None:
    b = rig.budgets
    assert await b.acquire(unique, ["c1", "c2"]) == 2
    assert await b.acquire(unique, ["c3", "c4"]) == 1  # only one left under the cap
    assert await b.acquire(unique, ["c5"]) == 0


async def test_renewing_held_slots_works_at_the_cap(rig: Rig, unique: str) -> None:
    b = rig.budgets
    assert await b.acquire(unique, ["c1", "c2", "c3"]) == 3
    assert await b.acquire(unique, ["c1", "c2", "c3"]) == 3
    assert await b.acquire(unique, ["c3", "c4"]) == 1  # c3 renewed, c4 refused


async def test_a_released_slot_is_free_again(rig: Rig, unique: str) -> None:
    b = rig.budgets
    assert await b.acquire(unique, ["c1", "c2", "c3"]) == 3
    await b.release(unique, "c2")
    await b.release(unique, "never-held")  # harmless
    assert await b.acquire(unique, ["c4"]) == 1
    assert await b.acquire(unique, ["c5"]) == 0


async def test_an_unrenewed_lease_expires_and_frees_its_slot(rig: Rig, unique: str) -> None:
    b = rig.budgets
    assert await b.acquire(unique, ["c1", "c2", "c3"]) == 3
    await rig.elapse(LIMITS.lease_s + 0.05)
    assert await b.acquire(unique, ["c4", "c5", "c6"]) == 3
    assert await b.acquire(unique, ["c1"]) == 0  # c1's lease is gone, and the cap is full


async def test_a_renewed_lease_outlives_its_first_term(rig: Rig, unique: str) -> None:
    b = rig.budgets
    assert await b.acquire(unique, ["c1", "c2", "c3"]) == 3
    await rig.elapse(LIMITS.lease_s * 0.6)
    assert await b.acquire(unique, ["c1"]) == 1  # renewed: a new full lease
    await rig.elapse(LIMITS.lease_s * 0.6)
    # c2 and c3 expired; c1 still holds its slot, so two new ones fit, not three.
    assert await b.acquire(unique, ["c4", "c5", "c6"]) == 2


async def test_users_have_separate_slots(rig: Rig, unique: str) -> None:
    b = rig.budgets
    assert await b.acquire(unique, ["c1", "c2", "c3"]) == 3
    assert await b.acquire(unique + "-b", ["c1", "c2", "c3"]) == 3


async def test_renewing_many_users_at_once_keeps_their_slots(rig: Rig, unique: str) -> None:
    b = rig.budgets
    other = unique + "-b"
    assert await b.acquire(unique, ["c1", "c2", "c3"]) == 3
    assert await b.acquire(other, ["c1"]) == 1
    await rig.elapse(LIMITS.lease_s * 0.6)
    assert await b.renew({unique: ["c1"], other: ["c1", "c2"]}) == 0
    await rig.elapse(LIMITS.lease_s * 0.6)
    # c2 and c3 expired unrenewed, c1 holds on: two new slots fit, not three.
    assert await b.acquire(unique, ["c4", "c5", "c6"]) == 2
    # The other user's renewal kept c1 and took c2 (under the cap): one slot is left.
    assert await b.acquire(other, ["c3", "c4"]) == 1


async def test_renewing_never_takes_slots_beyond_the_cap(rig: Rig, unique: str) -> None:
    b = rig.budgets
    assert await b.acquire(unique, ["c1", "c2", "c3"]) == 3
    assert await b.renew({unique: ["c1", "c2", "c3", "c4"]}) == 0
    assert await b.acquire(unique, ["c4"]) == 0
    assert await b.acquire(unique, ["c1", "c2", "c3"]) == 3


async def test_a_renewal_larger_than_one_batch_covers_every_user(rig: Rig, unique: str) -> None:
    # A long lease: the checks below take one round trip per user on a busy machine.
    b = rig.build(replace(LIMITS, lease_s=30))
    users = [f"{unique}-{i}" for i in range(RENEW_BATCH + 1)]
    assert await b.renew({user: ["c1", "c2", "c3"] for user in users}) == 0
    # Every user's renewal took all three slots (under the cap): none is left.
    assert [await b.acquire(user, ["c4"]) for user in users] == [0] * len(users)
    for user in users:
        await b.release(user, "c1")
    assert [await b.acquire(user, ["c4", "c5"]) for user in users] == [1] * len(users)


async def test_a_renewal_loads_its_script_again_when_redis_forgot_it(rig: Rig, unique: str) -> None:
    b = rig.budgets
    if not isinstance(b, RedisBudgets):
        pytest.skip("a Redis server's script cache")
    assert await b.acquire(unique, ["c1", "c2", "c3"]) == 3
    await b.client.script_flush()  # as after a restart or a failover
    await rig.elapse(LIMITS.lease_s * 0.6)
    assert await b.renew({unique: ["c1"], unique + "-b": ["c1"]}) == 0
    await rig.elapse(LIMITS.lease_s * 0.6)
    assert await b.acquire(unique, ["c4", "c5", "c6"]) == 2
    assert await b.acquire(unique + "-b", ["c2", "c3", "c4"]) == 2


# -- replay budget ---------------------------------------------------------------


async def test_replays_are_charged_up_to_the_budget_then_refused_with_a_wait(
    rig: Rig, unique: str
) -> None:
    b = rig.budgets
    assert [await b.charge_replay(unique) for _ in range(LIMITS.replay_budget)] == [0, 0, 0]
    wait = await b.charge_replay(unique)
    assert 0 < wait <= LIMITS.replay_window_s


async def test_a_refused_replay_never_extends_its_own_window(rig: Rig, unique: str) -> None:
    b = rig.budgets
    assert await b.charge_replay(unique) == 0
    await rig.elapse(LIMITS.replay_window_s * 0.4)
    assert await b.charge_replay(unique) == 0
    assert await b.charge_replay(unique) == 0
    first = await b.charge_replay(unique)
    assert 0 < first < LIMITS.replay_window_s * 0.7  # until the oldest charge leaves
    await rig.elapse(first / 2)
    second = await b.charge_replay(unique)
    assert 0 < second < first  # the same window, closer to its end
    await rig.elapse(second + 0.1)
    # The oldest charge left the window: one replay fits.  Had the two refusals been
    # recorded, they would still fill it.
    assert await b.charge_replay(unique) == 0
    assert await b.charge_replay(unique) > 0


async def test_the_window_slides(rig: Rig, unique: str) -> None:
    b = rig.budgets
    assert await b.charge_replay(unique) == 0
    await rig.elapse(LIMITS.replay_window_s * 0.6)
    assert await b.charge_replay(unique) == 0
    assert await b.charge_replay(unique) == 0
    assert await b.charge_replay(unique) > 0
    await rig.elapse(LIMITS.replay_window_s * 0.5)
    # Only the first charge left the window: one replay fits, the next does not.
    assert await b.charge_replay(unique) == 0
    assert await b.charge_replay(unique) > 0


async def test_users_have_separate_replay_budgets(rig: Rig, unique: str) -> None:
    b = rig.budgets
    for _ in range(LIMITS.replay_budget):
        assert await b.charge_replay(unique) == 0
    assert await b.charge_replay(unique) > 0
    assert await b.charge_replay(unique + "-b") == 0

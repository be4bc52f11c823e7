"""One contract, every ticket store: MemoryTicketStore and RedisTicketStore (real Redis).

The contract (``herald.api.tickets.TicketStore``): a ticket stands for the claims it
was issued with, for ``ttl_s`` seconds, and is redeemed at most once, even by racing
requests; anything else (unknown, malformed, expired, spent) redeems to None.  A
spent ticket's stream session gives the claims back, as often as asked until it
expires, but only with the secret issued for that very ticket.

Time: the memory store reads an injected clock that the test moves; Redis expires
keys by its own clock (``TIME``), which the test polls until the interval passed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from herald.api.tickets import MemoryTicketStore, RedisTicketStore, TicketStore, stream_cookie_name
from tests.conftest import REDIS_URL

TTL_S = 1
DEADLINE_S = 15  # generous: the machine may be loaded
CLAIMS = {"sub": "alice", "role": "user", "exp": 1_900_000_000, "topics": ["printers"]}


@dataclass
class Rig:
    store: TicketStore
    # Let ``seconds`` pass on the clock the store reads.
    elapse: Callable[[float], Awaitable[None]]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def redis_now_s(client: aioredis.Redis) -> float:
    seconds, micros = await client.time()
    return int(seconds) + int(micros) / 1e6


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    if request.param == "memory":
        clock = FakeClock()

        async def advance(seconds: float) -> None:
            clock.now += seconds

        yield Rig(MemoryTicketStore(TTL_S, clock=clock), advance)
        return
    client = aioredis.Redis.from_url(REDIS_URL)

    async def wait_on_redis_clock(seconds: float) -> None:
        # Poll Redis's own clock, the one its key expiry reads.
        end = await redis_now_s(client) + seconds
        async with asyncio.timeout(DEADLINE_S):
            while await redis_now_s(client) < end:
                pass

    # Every key the test makes expires within TTL_S: nothing to clean up.
    yield Rig(RedisTicketStore(client, TTL_S), wait_on_redis_clock)
    await client.aclose()


async def test_a_ticket_redeems_to_its_claims_once(rig: Rig) -> None:
    ticket = await rig.store.issue(CLAIMS)
    assert await rig.store.redeem(ticket) == CLAIMS
    assert await rig.store.redeem(ticket) is None


async def test_tickets_are_distinct_and_url_safe(rig: Rig) -> None:
    tickets = {await rig.store.issue(CLAIMS) for _ in range(20)}
    assert len(tickets) == 20
    for t in tickets:
        assert 16 <= len(t) <= 64 and t.replace("-", "").replace("_", "").isalnum()


async def test_racing_redeems_of_one_ticket_let_exactly_one_in(rig: Rig) -> None:
    ticket = await rig.store.issue(CLAIMS)
    results = await asyncio.gather(*(rig.store.redeem(ticket) for _ in range(10)))
    assert [r for r in results if r is not None] == [CLAIMS]


@pytest.mark.parametrize("ticket", ["", "short", "x" * 65, "never-issued-but-long-enough"])
async def test_unknown_and_malformed_tickets_redeem_to_none(rig: Rig, ticket: str) -> None:
    assert await rig.store.redeem(ticket) is None


async def test_a_ticket_expires_after_its_ttl(rig: Rig) -> None:
    kept, lapsed = await rig.store.issue(CLAIMS), await rig.store.issue(CLAIMS)
    assert await rig.store.redeem(kept) == CLAIMS  # within the TTL
    await rig.elapse(TTL_S + 0.05)
    assert await rig.store.redeem(lapsed) is None


async def test_a_spent_tickets_session_gives_the_claims_again_with_its_secret(rig: Rig) -> None:
    ticket = await rig.store.issue(CLAIMS)
    claims = await rig.store.redeem(ticket)
    assert claims is not None
    secret = await rig.store.open_session(ticket, claims, ttl_s=60)
    assert await rig.store.session(ticket, secret) == CLAIMS
    assert await rig.store.session(ticket, secret) == CLAIMS  # reusable: EventSource reconnects
    assert await rig.store.redeem(ticket) is None  # the ticket itself stays spent


async def test_a_session_needs_the_secret_issued_for_that_ticket(rig: Rig) -> None:
    mine, theirs = await rig.store.issue(CLAIMS), await rig.store.issue({"sub": "bob"})
    my_secret = await rig.store.open_session(mine, CLAIMS, ttl_s=60)
    their_secret = await rig.store.open_session(theirs, {"sub": "bob"}, ttl_s=60)
    assert my_secret != their_secret
    assert await rig.store.session(mine, their_secret) is None
    assert await rig.store.session(theirs, my_secret) is None
    assert await rig.store.session(mine, "") is None
    assert await rig.store.session(mine, my_secret + "x") is None
    assert await rig.store.session("never-issued-but-long-enough", my_secret) is None


async def test_a_session_expires_after_its_ttl(rig: Rig) -> None:
    ticket = await rig.store.issue(CLAIMS)
    secret = await rig.store.open_session(ticket, CLAIMS, ttl_s=1)
    assert await rig.store.session(ticket, secret) == CLAIMS
    await rig.elapse(1.05)
    assert await rig.store.session(ticket, secret) is None


def test_each_ticket_has_its_own_cookie_name() -> None:
    a, b = "a" * 32, "b" * 32
    assert stream_cookie_name(a) == stream_cookie_name(a) != stream_cookie_name(b)
    assert a not in stream_cookie_name(a)  # the cookie name does not give the ticket away

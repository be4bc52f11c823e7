"""Failure modes are explicit: the strict call raises named errors, the
fire-and-forget helper never raises and says why nothing was published."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from herald.api.app import create_app
from herald.api.auth import Authenticator
from herald.api.state import memory_state
from herald.api.tickets import RedisTicketStore
from herald.journal.base import JournalLimits, JournalUnavailable, try_publish
from herald.journal.positions import Target
from herald.journal.redis import RedisJournal
from herald.journal.runtime.settings import Settings


@pytest.fixture
async def dead_redis() -> AsyncIterator[aioredis.Redis]:
    # A port that was just free: nothing listens there, so connecting fails at once.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = aioredis.Redis(port=port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    yield client
    await client.aclose()


async def test_strict_publish_raises_journal_unavailable(dead_redis: aioredis.Redis):
    journal = RedisJournal(dead_redis, JournalLimits())
    with pytest.raises(JournalUnavailable, match="Redis unavailable"):
        await journal.publish(Target.user("a"), "demo.x", {})


@pytest.mark.parametrize(
    ("type_", "data", "reason"),
    [
        ("demo.x", {}, "unavailable"),
        ("demo.x", {"blob": "x" * 70000}, "too_large"),
        ("Nope", {}, "invalid"),
    ],
)
async def test_try_publish_never_raises_and_says_why(
    dead_redis: aioredis.Redis, type_: str, data: dict[str, object], reason: str
):
    outcome = await try_publish(
        RedisJournal(dead_redis, JournalLimits()), Target.user("a"), type_, data
    )
    assert not outcome.ok and outcome.reason == reason and outcome.detail


async def test_http_publish_is_503_when_redis_is_down(dead_redis: aioredis.Redis):
    settings = Settings(jwt_secret="z" * 40, redis_url="redis://dead")  # type: ignore[arg-type]
    auth = Authenticator(settings)
    state = replace(
        memory_state(settings, auth),
        journal=RedisJournal(dead_redis),
        tickets=RedisTicketStore(dead_redis, 30),
    )
    app = create_app(settings, state=state)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://h"
    ) as http:
        r = await http.post(
            "/api/publish",
            headers={"Authorization": f"Bearer {auth.issue('ops', ('admin',), 60)}"},
            json={"user": "a", "type": "demo.x", "data": {}},
        )
    assert r.status_code == 503 and r.json()["error"] == "journal_unavailable"

"""What the lifespan builds once and every handler receives: a typed state."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from starlette.requests import HTTPConnection

from api.auth import Authenticator, Principal
from api.tickets import MemoryTicketStore, RedisTicketStore, TicketStore
from journal.base import Journal
from journal.clients import make_journal, make_redis
from journal.settings import Settings

__all__ = ["AppState", "build_state", "state_of"]


@dataclass(slots=True)
class AppState:
    settings: Settings
    auth: Authenticator
    journal: Journal
    tickets: TicketStore
    redis: aioredis.Redis | None = None
    started_at: float = field(default_factory=time.time)

    async def principal(self, conn: HTTPConnection) -> Principal:
        return await self.auth.authenticate(conn, self.tickets)

    async def aclose(self) -> None:
        await self.journal.aclose()
        if self.redis is not None:
            await self.redis.aclose()


def build_state(settings: Settings, auth: Authenticator) -> AppState:
    """Clients for the configured URLs; ``memory://`` keeps everything in-process."""
    if settings.redis_url.startswith("memory://"):
        return AppState(
            settings, auth, make_journal(settings, None), MemoryTicketStore(settings.ticket_ttl_s)
        )
    client = make_redis(settings)
    return AppState(
        settings,
        auth,
        make_journal(settings, client),
        RedisTicketStore(client, settings.ticket_ttl_s),
        redis=client,
    )


def state_of(conn: HTTPConnection) -> AppState:
    state: AppState = conn.app.state.herald
    return state

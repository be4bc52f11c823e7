"""Single-use SSE tickets, so browsers need not put long-lived tokens in URLs.

A stream opened with a ticket also gets a stream-session cookie (reusable until
the token's expiry), because EventSource reconnects on its own to the same URL —
spent ticket included — and must still be let in.

A ticket is a random string mapped to the caller's claims for a few seconds.
Redeeming it deletes it in the same command (``GETDEL``), so two requests racing
with one ticket cannot both succeed.  Two implementations of one small interface:
Redis (shared by every process) and memory (``memory://`` mode, tests).
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis

__all__ = ["MemoryTicketStore", "RedisTicketStore", "TicketStore"]


def _new_ticket() -> str:
    return secrets.token_urlsafe(24)


class TicketStore(Protocol):
    ttl_s: int

    async def issue(self, claims: dict[str, Any]) -> str: ...

    async def redeem(self, ticket: str) -> dict[str, Any] | None:
        """The claims, once; None if the ticket is unknown, expired or already used."""
        ...

    async def open_session(self, claims: dict[str, Any], ttl_s: int) -> str:
        """A reusable stream session for the same claims, valid ``ttl_s`` seconds: what
        a browser's automatic EventSource reconnect presents once its ticket is spent."""
        ...

    async def session(self, session_id: str) -> dict[str, Any] | None: ...


class RedisTicketStore:
    def __init__(self, client: aioredis.Redis, ttl_s: int) -> None:
        self.client = client
        self.ttl_s = ttl_s

    async def issue(self, claims: dict[str, Any]) -> str:
        ticket = _new_ticket()
        await self.client.set(f"herald:ticket:{ticket}", orjson.dumps(claims), ex=self.ttl_s)
        return ticket

    async def redeem(self, ticket: str) -> dict[str, Any] | None:
        if not 16 <= len(ticket) <= 64:
            return None
        raw = await self.client.getdel(f"herald:ticket:{ticket}")
        claims: dict[str, Any] | None = orjson.loads(raw) if raw else None
        return claims

    async def open_session(self, claims: dict[str, Any], ttl_s: int) -> str:
        session_id = _new_ticket()
        key = f"herald:sse-session:{session_id}"
        await self.client.set(key, orjson.dumps(claims), ex=max(1, ttl_s))
        return session_id

    async def session(self, session_id: str) -> dict[str, Any] | None:
        if not 16 <= len(session_id) <= 64:
            return None
        raw = await self.client.get(f"herald:sse-session:{session_id}")
        claims: dict[str, Any] | None = orjson.loads(raw) if raw else None
        return claims


class MemoryTicketStore:
    def __init__(self, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        self._tickets: dict[str, tuple[dict[str, Any], float]] = {}
        self._sessions: dict[str, tuple[dict[str, Any], float]] = {}

    async def issue(self, claims: dict[str, Any]) -> str:
        ticket = _new_ticket()
        now = time.monotonic()
        # Drop expired tickets on the way, so the dict cannot grow without bound.
        for t in [t for t, (_, exp) in self._tickets.items() if exp <= now]:
            del self._tickets[t]
        self._tickets[ticket] = (claims, now + self.ttl_s)
        return ticket

    async def redeem(self, ticket: str) -> dict[str, Any] | None:
        found = self._tickets.pop(ticket, None)
        if found is None or found[1] <= time.monotonic():
            return None
        return found[0]

    async def open_session(self, claims: dict[str, Any], ttl_s: int) -> str:
        session_id = _new_ticket()
        self._sessions[session_id] = (claims, time.monotonic() + ttl_s)
        return session_id

    async def session(self, session_id: str) -> dict[str, Any] | None:
        found = self._sessions.get(session_id)
        if found is None or found[1] <= time.monotonic():
            return None
        return found[0]

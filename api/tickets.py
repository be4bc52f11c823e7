"""Single-use SSE tickets, so browsers need not put long-lived tokens in URLs.

A stream opened with a ticket also gets a stream session, because EventSource
reconnects on its own to the same URL — spent ticket included — and must still
be let in.  The session is stored under the hash of *that* ticket and holds a
secret that only the browser's cookie knows: a leaked URL alone opens nothing,
and one tab's cookie never admits another tab's ticket (each ticket has its own
cookie name, see ``stream_cookie_name``).

A ticket is a random string mapped to the caller's claims for a few seconds.
Redeeming it deletes it in the same command (``GETDEL``), so two requests racing
with one ticket cannot both succeed.  Two implementations of one small interface:
Redis (shared by every process) and memory (``memory://`` mode, tests).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis

from herald.api.keys import sse_session_key, ticket_key

__all__ = ["MemoryTicketStore", "RedisTicketStore", "TicketStore", "stream_cookie_name"]


def _new_ticket() -> str:
    return secrets.token_urlsafe(24)


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def stream_cookie_name(ticket: str) -> str:
    """The cookie that lets a spent ``ticket`` reconnect: one per ticket, so tabs
    of different users in one browser never trade sessions."""
    return f"herald_sse_{_digest(ticket)[:16]}"


def _matches(record: dict[str, Any] | None, secret: str) -> dict[str, Any] | None:
    if record is None or not hmac.compare_digest(str(record.get("secret", "")), secret):
        return None
    claims: dict[str, Any] = record["claims"]
    return claims


class TicketStore(Protocol):
    ttl_s: int

    async def issue(self, claims: dict[str, Any]) -> str: ...

    async def redeem(self, ticket: str) -> dict[str, Any] | None:
        """The claims, once; None if the ticket is unknown, expired or already used."""
        ...

    async def open_session(self, ticket: str, claims: dict[str, Any], ttl_s: int) -> str:
        """After ``ticket`` was redeemed: a reusable session for the same claims, valid
        ``ttl_s`` seconds; returns the secret for the ticket's cookie."""
        ...

    async def session(self, ticket: str, secret: str) -> dict[str, Any] | None:
        """The claims if ``secret`` is the one issued for spent ``ticket``."""
        ...


class RedisTicketStore:
    def __init__(self, client: aioredis.Redis, ttl_s: int) -> None:
        self.client = client
        self.ttl_s = ttl_s

    async def issue(self, claims: dict[str, Any]) -> str:
        ticket = _new_ticket()
        await self.client.set(ticket_key(ticket), orjson.dumps(claims), ex=self.ttl_s)
        return ticket

    async def redeem(self, ticket: str) -> dict[str, Any] | None:
        if not 16 <= len(ticket) <= 64:
            return None
        raw = await self.client.getdel(ticket_key(ticket))
        claims: dict[str, Any] | None = orjson.loads(raw) if raw else None
        return claims

    async def open_session(self, ticket: str, claims: dict[str, Any], ttl_s: int) -> str:
        secret = _new_ticket()
        record = orjson.dumps({"claims": claims, "secret": secret})
        await self.client.set(sse_session_key(ticket), record, ex=max(1, ttl_s))
        return secret

    async def session(self, ticket: str, secret: str) -> dict[str, Any] | None:
        raw = await self.client.get(sse_session_key(ticket))
        return _matches(orjson.loads(raw) if raw else None, secret)


class MemoryTicketStore:
    def __init__(self, ttl_s: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._tickets: dict[str, tuple[dict[str, Any], float]] = {}
        self._sessions: dict[str, tuple[dict[str, Any], float]] = {}

    async def issue(self, claims: dict[str, Any]) -> str:
        ticket = _new_ticket()
        now = self._clock()
        # Drop expired tickets on the way, so the dict cannot grow without bound.
        for t in [t for t, (_, exp) in self._tickets.items() if exp <= now]:
            del self._tickets[t]
        self._tickets[ticket] = (claims, now + self.ttl_s)
        return ticket

    async def redeem(self, ticket: str) -> dict[str, Any] | None:
        found = self._tickets.pop(ticket, None)
        if found is None or found[1] <= self._clock():
            return None
        return found[0]

    async def open_session(self, ticket: str, claims: dict[str, Any], ttl_s: int) -> str:
        secret = _new_ticket()
        record = {"claims": claims, "secret": secret}
        now = self._clock()
        # As in issue: expired sessions go on the way, so the dict cannot grow without bound.
        for d in [d for d, (_, exp) in self._sessions.items() if exp <= now]:
            del self._sessions[d]
        self._sessions[_digest(ticket)] = (record, now + max(1, ttl_s))
        return secret

    async def session(self, ticket: str, secret: str) -> dict[str, Any] | None:
        found = self._sessions.get(_digest(ticket))
        if found is None or found[1] <= self._clock():
            return None
        return _matches(found[0], secret)

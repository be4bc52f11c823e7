"""Small parts of the worker: its name, its blocking client, its slots, reply parsing."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

from herald.journal.runtime.clients import tcp_options
from herald.journal.runtime.cluster import make_cluster

if TYPE_CHECKING:
    from herald.journal.runtime.settings import Settings

__all__ = [
    "Slots",
    "blocking_client",
    "cancel_all",
    "default_consumer_name",
    "id_order",
    "stream_rows",
    "text",
]


def default_consumer_name() -> str:
    """Host, pid and a random part: unique even for pid 1 in many containers."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def blocking_client(settings: Settings) -> aioredis.Redis:
    """A client of one connection for blocking reads: no socket timeout (a read may
    block for BLOCK_MS), TCP keepalive to notice a dead peer."""
    if settings.redis_cluster:
        return make_cluster(settings, blocking=True)
    return aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=None,
        socket_connect_timeout=settings.redis_socket_timeout_s,
        health_check_interval=0,
        max_connections=1,
        **tcp_options(settings.redis_url),  # type: ignore[arg-type]
    )


class Slots:
    """Free task slots.  Readers take several at once and give back what they
    did not use; a finished task gives back its own."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._changed = asyncio.Event()

    async def take(self, most: int) -> int:
        while self.free <= 0:
            self._changed.clear()
            await self._changed.wait()
        n = min(most, self.free)
        self.free -= n
        return n

    def take_now(self, most: int) -> int:
        n = max(0, min(most, self.free))
        self.free -= n
        return n

    def give(self, n: int) -> None:
        if n:
            self.free += n
            self._changed.set()


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def id_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def stream_rows(reply: Any) -> list[tuple[str, dict[Any, Any]]]:
    """XREADGROUP's reply for one stream as [(entry id, fields)]."""
    if not reply:
        return []
    rows = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
    return [(text(i), f) for i, f in rows]

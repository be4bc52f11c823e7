"""Build the infrastructure clients from settings.  Called once, from a lifespan or CLI."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import TimeoutError as RedisTimeoutError

from herald.journal.base import Journal, JournalLimits
from herald.journal.memory import MemoryJournal
from herald.journal.redis import RedisJournal
from herald.journal.runtime.cluster import make_cluster
from herald.journal.runtime.settings import Settings

__all__ = [
    "BoundedPipeline",
    "BoundedRedis",
    "journal_limits",
    "make_journal",
    "make_redis",
    "pubsub_pool",
    "tcp_options",
]


class BoundedRedis(aioredis.Redis):
    """A command client whose every call (command, script, pipeline) ends within
    ``deadline_s``, raising redis-py's ``TimeoutError`` (a ``RedisError``) if not.

    Socket timeouts alone do not bound a call: against a frozen server (stopped,
    not dead) redis-py's retries and its health-check PING re-enter each other
    and a call never returns.  A deadline around the whole call does; redis-py
    drops the connection of a call cancelled half-way, so none is reused with a
    reply still owed on it."""

    deadline_s: float = 5.0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            async with asyncio.timeout(self.deadline_s):
                return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except TimeoutError as e:
            raise RedisTimeoutError(
                f"Redis did not answer {args[0] if args else 'a command'} "
                f"within {self.deadline_s:g} s"
            ) from e

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = BoundedPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
        pipe.deadline_s = self.deadline_s
        return pipe


class BoundedPipeline(Pipeline):
    """A pipeline whose ``execute`` ends within ``deadline_s`` (see ``BoundedRedis``)."""

    deadline_s: float = 5.0

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        try:
            async with asyncio.timeout(self.deadline_s):
                return await super().execute(raise_on_error)
        except TimeoutError as e:
            await self.reset()  # type: ignore[no-untyped-call]
            raise RedisTimeoutError(
                f"Redis did not answer a pipeline within {self.deadline_s:g} s"
            ) from e


def journal_limits(settings: Settings) -> JournalLimits:
    return JournalLimits(
        max_envelope_bytes=settings.max_envelope_bytes,
        stream_maxlen=settings.stream_maxlen,
        idempotency_window_s=settings.idempotency_window_s,
        default_source=settings.default_source,
    )


def make_redis(settings: Settings, url: str | None = None) -> aioredis.Redis:
    """The command client: bounded pool, health checks and TCP keepalive, bytes replies;
    every call ends within ``HERALD_REDIS_SOCKET_TIMEOUT_S`` (``BoundedRedis``).  On
    Redis Cluster (and no ``url``), the cluster client."""
    if settings.redis_cluster and url is None:
        return make_cluster(settings)
    url = url or settings.redis_url
    # A blocking pool makes a burst wait for a free connection instead of failing.
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_socket_timeout_s,
        socket_timeout=settings.redis_socket_timeout_s,
        socket_connect_timeout=settings.redis_socket_timeout_s,
        health_check_interval=settings.redis_health_check_interval_s,
        # Ride out a failover blip, but answer "unavailable" within a second rather
        # than after redis-py's default multi-second backoff.
        retry=Retry(ExponentialBackoff(cap=0.25, base=0.05), retries=2),
        **tcp_options(url),
    )
    client = BoundedRedis.from_pool(pool)  # the client owns and closes the pool
    assert isinstance(client, BoundedRedis)
    client.deadline_s = settings.redis_socket_timeout_s
    return client


def pubsub_pool(settings: Settings) -> aioredis.ConnectionPool:
    """Connections for live pub/sub readers: no socket timeout (they block on reads and
    ping to find a dead peer), a bounded connect, TCP keepalive, credentials and TLS
    from ``HERALD_REDIS_URL``."""
    return aioredis.ConnectionPool.from_url(
        settings.redis_url,
        socket_timeout=None,
        socket_connect_timeout=settings.redis_socket_timeout_s,
        health_check_interval=0,
        **tcp_options(settings.redis_url),
    )


def tcp_options(url: str) -> dict[str, object]:
    """TCP keepalive for ``redis://`` URLs; unix-socket connections refuse these keywords."""
    if not url.startswith(("redis://", "rediss://")):
        return {}
    return {"socket_keepalive": True, "socket_keepalive_options": keepalive_options()}


def keepalive_options() -> dict[int, int]:
    # Notice a dead peer in about a minute instead of the kernel's two hours.
    opts = {}
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            opts[getattr(socket, name)] = value
    return opts


def make_journal(settings: Settings, client: aioredis.Redis | None) -> Journal:
    """``memory://`` gives an in-process journal; anything else the Redis one on ``client``."""
    limits = journal_limits(settings)
    if settings.redis_url.startswith("memory://") or client is None:
        return MemoryJournal(limits)
    return RedisJournal(client, limits)

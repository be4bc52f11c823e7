"""Build the infrastructure clients from settings.  Called once, from a lifespan or CLI."""

from __future__ import annotations

import socket

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from herald.journal.base import Journal, JournalLimits
from herald.journal.memory import MemoryJournal
from herald.journal.redis import RedisJournal
from herald.journal.runtime.cluster import make_cluster
from herald.journal.runtime.settings import Settings

__all__ = ["journal_limits", "make_journal", "make_redis", "tcp_options"]


def journal_limits(settings: Settings) -> JournalLimits:
    return JournalLimits(
        max_envelope_bytes=settings.max_envelope_bytes,
        stream_maxlen=settings.stream_maxlen,
        idempotency_window_s=settings.idempotency_window_s,
        default_source=settings.default_source,
    )


def make_redis(settings: Settings, url: str | None = None) -> aioredis.Redis:
    """The command client: bounded pool, health checks and TCP keepalive, bytes replies."""
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
    return aioredis.Redis.from_pool(pool)  # the client owns and closes the pool


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

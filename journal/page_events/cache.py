"""Per-process cache of each route's active events, for ``/current``.

The cache holds candidates, not answers: which of them applies is decided per
request against the clock (``resolve``), so a window opening or closing needs no
invalidation.  A change does: every committed change bumps a Redis counter
(``VERSION_KEY``), and a lookup first reads it — one round trip — and drops the
whole cache when it moved.  Entries loaded under an older counter are never
stored: a lookup whose database read raced a change cannot keep stale rows.
Without Redis (or when it fails) every lookup reads PostgreSQL.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from herald.journal.page_events.keys import VERSION_KEY
from herald.journal.page_events.models import PageEvent
from herald.journal.page_events.store import PageEventStore

__all__ = ["RouteCache"]

log = logging.getLogger("herald.page_events")


class RouteCache:
    """``max_routes`` routes at most, least recently used dropped first (0: off)."""

    def __init__(
        self, store: PageEventStore, redis: aioredis.Redis | None, max_routes: int
    ) -> None:
        self.store = store
        self.redis = redis
        self.max_routes = max_routes
        self._version: bytes | None = None
        self._entries: OrderedDict[str, list[PageEvent]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    async def _current_version(self) -> bytes | None:
        """The counter, or None when the cache cannot be trusted (no Redis, an error)."""
        if self.redis is None or self.max_routes == 0:
            return None
        try:
            value = await self.redis.get(VERSION_KEY)
        except (RedisError, OSError) as e:
            log.warning("page event cache bypassed: %s", e)
            return None
        if value is None:
            return b"0"
        return value.encode() if isinstance(value, str) else bytes(value)

    async def candidates(self, route: str) -> list[PageEvent]:
        version = await self._current_version()
        if version is None:
            self._entries.clear()
            self._version = None
            return await self.store.candidates(route)
        if version != self._version:
            self._entries.clear()
            self._version = version
        found = self._entries.get(route)
        if found is not None:
            self.hits += 1
            self._entries.move_to_end(route)
            return found
        self.misses += 1
        loaded = await self.store.candidates(route)
        if self._version == version:  # no newer change seen while loading
            self._entries[route] = loaded
            if len(self._entries) > self.max_routes:
                self._entries.popitem(last=False)
        return loaded

    async def changed(self) -> None:
        """Call after a change committed: this process forgets at once, the others at
        their next lookup.  Raises the Redis error if the counter cannot be bumped
        (the caller reports it: other processes would serve stale events)."""
        self._entries.clear()
        self._version = None
        if self.redis is not None:
            await self.redis.incr(VERSION_KEY)

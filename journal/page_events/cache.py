"""Per-process cache of each route's active events, for ``/current``.

The cache holds candidates, not answers: which of them applies is decided per
request against the clock (``resolve``), so a window opening or closing needs no
invalidation.  A change does: every committed change bumps its route's counter in
one Redis hash (``VERSIONS_KEY``, field = route; the field ``""`` counts changes
to every route), and a lookup first reads its route's counter and the global one
(one ``HMGET``); an entry filled under other counters is reloaded.  A change to
one route leaves every other route's entry valid.  Entries loaded under counters
that moved meanwhile are still stored under the old counters, so the next lookup
reloads them: a read that raced a change cannot keep stale rows.  Without Redis
(or when it fails) every lookup reads PostgreSQL.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from herald.journal.page_events.keys import ALL_ROUTES, VERSIONS_KEY
from herald.journal.page_events.models import PageEvent
from herald.journal.page_events.store import PageEventStore

__all__ = ["RouteCache"]

log = logging.getLogger("herald.page_events")

Version = tuple[bytes | None, bytes | None]


class RouteCache:
    """``max_routes`` routes at most, least recently used dropped first (0: off)."""

    def __init__(
        self, store: PageEventStore, redis: aioredis.Redis | None, max_routes: int
    ) -> None:
        self.store = store
        self.redis = redis
        self.max_routes = max_routes
        self._entries: OrderedDict[str, tuple[Version, list[PageEvent]]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    async def _version(self, route: str) -> Version | None:
        """The (global, route) counters, or None when the cache cannot be trusted."""
        if self.redis is None or self.max_routes == 0:
            return None
        try:
            found = await self.redis.hmget(VERSIONS_KEY, [ALL_ROUTES, route])
        except (RedisError, OSError) as e:
            log.warning("page event cache bypassed: %s", e)
            return None
        return (_bytes(found[0]), _bytes(found[1]))

    async def candidates(self, route: str) -> list[PageEvent]:
        version = await self._version(route)
        if version is None:
            self._entries.clear()
            return await self.store.candidates(route)
        entry = self._entries.get(route)
        if entry is not None and entry[0] == version:
            self.hits += 1
            self._entries.move_to_end(route)
            return entry[1]
        self.misses += 1
        loaded = await self.store.candidates(route)
        self._entries[route] = (version, loaded)
        self._entries.move_to_end(route)
        if len(self._entries) > self.max_routes:
            self._entries.popitem(last=False)
        return loaded

    async def changed(self, routes: Iterable[str]) -> None:
        """Call after a change to events of ``routes`` committed: this process forgets
        them at once, the others at their next lookup.  Raises the Redis error if a
        counter cannot be bumped (other processes would serve stale events)."""
        fields = sorted(set(routes))
        for route in fields:
            self._entries.pop(route, None)
        if self.redis is not None and fields:
            async with self.redis.pipeline(transaction=True) as pipe:
                for route in fields:
                    pipe.hincrby(VERSIONS_KEY, route, 1)
                await pipe.execute()

    async def changed_all(self) -> None:
        """After changes made behind the API's back (bulk SQL): every route reloads."""
        self._entries.clear()
        if self.redis is not None:
            await self.redis.hincrby(VERSIONS_KEY, ALL_ROUTES, 1)


def _bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value

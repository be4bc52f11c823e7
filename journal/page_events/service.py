"""What a process keeps for page events: the store, the ``/current`` cache and the
window watcher, built once in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from herald.journal.base import Journal
from herald.journal.page_events.cache import RouteCache
from herald.journal.page_events.store import PageEventStore
from herald.journal.page_events.watcher import WindowWatcher
from herald.journal.runtime.settings import Settings

__all__ = ["PageEvents"]


@dataclass(slots=True)
class PageEvents:
    store: PageEventStore
    cache: RouteCache
    watcher: WindowWatcher | None  # None: HERALD_PAGE_EVENTS_WATCHER is off

    @classmethod
    def build(
        cls,
        settings: Settings,
        engine: AsyncEngine,
        redis: aioredis.Redis | None,
        journal: Journal,
        watcher_id: str,
    ) -> PageEvents:
        store = PageEventStore(engine)
        watcher = None
        if settings.page_events_watcher:
            watcher = WindowWatcher(
                store,
                journal,
                watcher_id=watcher_id,
                poll_s=settings.page_events_poll_s,
                catchup_s=settings.page_events_catchup_s,
            )
        return cls(store, RouteCache(store, redis, settings.page_events_cache_routes), watcher)

    def start(self) -> None:
        if self.watcher is not None:
            self.watcher.start()

    async def changed(self, *routes: str | None) -> None:
        """After a committed change to events of ``routes``: drop them from every
        process's cache, re-plan windows."""
        if self.watcher is not None:
            self.watcher.wake()
        await self.cache.changed(r for r in routes if r is not None)

    async def aclose(self) -> None:
        if self.watcher is not None:
            await self.watcher.aclose()

"""The ``/current`` route cache over fakeredis and a counting store: hits need no
database read, a change reloads only its routes (in every process sharing Redis),
a load that raced a change is not served again, and without Redis nothing is kept."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest

from herald.journal.page_events import PageEvent, RouteCache


def event(route: str, name: str = "e") -> PageEvent:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    return PageEvent(uuid.uuid4(), name, None, route, {}, None, True, None, None, "admin", t, t)


class Store:
    """Stands in for ``PageEventStore.candidates``: a dict, and a read counter."""

    def __init__(self) -> None:
        self.rows: dict[str, list[PageEvent]] = {}
        self.reads: list[str] = []
        self.gate: asyncio.Event | None = None  # holds a read until set
        self.reading = asyncio.Event()  # a read took its snapshot

    async def candidates(self, route: str) -> list[PageEvent]:
        self.reads.append(route)
        snapshot = list(self.rows.get(route, []))
        self.reading.set()
        if self.gate is not None:
            await self.gate.wait()
        return snapshot


@pytest.fixture
def redis() -> Any:
    return fakeredis.FakeAsyncRedis()


def cache(store: Store, redis: Any, max_routes: int = 100) -> RouteCache:
    return RouteCache(store, redis, max_routes)  # type: ignore[arg-type]


async def test_a_second_lookup_is_a_hit(redis: Any):
    store = Store()
    store.rows["/a"] = [event("/a")]
    c = cache(store, redis)
    first = await c.candidates("/a")
    assert await c.candidates("/a") is first
    assert store.reads == ["/a"] and (c.hits, c.misses) == (1, 1)


async def test_a_change_reloads_its_routes_in_every_process_and_no_other(redis: Any):
    store = Store()
    store.rows = {"/a": [event("/a")], "/b": [event("/b")]}
    here, there = cache(store, redis), cache(store, redis)
    for c in (here, there):
        await c.candidates("/a")
        await c.candidates("/b")
    store.reads.clear()
    store.rows["/a"] = [event("/a", "new")]
    await here.changed(["/a"])
    assert [e.name for e in await there.candidates("/a")] == ["new"]
    assert [e.name for e in await here.candidates("/a")] == ["new"]
    await there.candidates("/b")
    assert store.reads == ["/a", "/a"]  # /b stayed cached in both


async def test_changed_all_reloads_every_route(redis: Any):
    store = Store()
    store.rows = {"/a": [], "/b": []}
    c, other = cache(store, redis), cache(store, redis)
    await c.candidates("/a")
    await c.candidates("/b")
    await other.changed_all()
    store.reads.clear()
    await c.candidates("/a")
    await c.candidates("/b")
    assert store.reads == ["/a", "/b"]


async def test_a_load_that_raced_a_change_is_reloaded_next_time(redis: Any):
    store = Store()
    store.rows["/a"] = [event("/a", "old")]
    c = cache(store, redis)
    store.gate = asyncio.Event()
    slow = asyncio.create_task(c.candidates("/a"))
    await store.reading.wait()  # the read has its snapshot and waits at the gate
    store.rows["/a"] = [event("/a", "new")]
    await cache(store, redis).changed(["/a"])  # another process commits a change
    store.gate.set()
    assert [e.name for e in await slow] == ["old"]  # answered before it knew
    assert [e.name for e in await c.candidates("/a")] == ["new"]


async def test_the_least_recently_used_route_goes_first(redis: Any):
    store = Store()
    c = cache(store, redis, max_routes=2)
    for route in ("/a", "/b", "/a", "/c"):
        await c.candidates(route)
    store.reads.clear()
    await c.candidates("/a")
    await c.candidates("/b")
    assert store.reads == ["/b"]


async def test_without_redis_or_with_size_zero_every_lookup_reads(redis: Any):
    for c in (cache(Store(), None), cache(Store(), redis, max_routes=0)):
        await c.candidates("/a")
        await c.candidates("/a")
        assert c.store.reads == ["/a", "/a"]  # type: ignore[attr-defined]


async def test_a_redis_failure_bypasses_the_cache():
    class Broken:
        async def hmget(self, *_: Any) -> Any:
            raise ConnectionError("redis down")

    store = Store()
    c = RouteCache(store, Broken(), 10)  # type: ignore[arg-type]
    await c.candidates("/a")
    await c.candidates("/a")
    assert store.reads == ["/a", "/a"]

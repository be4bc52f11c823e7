"""Page events with real Redis and PostgreSQL: the admin API, what ``/current``
resolves (header or ``?route=``, windows compared as instants, 409 on ambiguity),
the cache shared across processes, ``page_event.changed`` on every change, and
each window opening and closing announced once however many processes watch."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from herald.api.app import create_app
from herald.api.auth import Authenticator
from herald.api.state import AppState, open_state
from herald.journal.page_events import TOPIC, PageEventStore, WindowWatcher
from herald.journal.positions import Target
from herald.journal.runtime.db import make_engine
from herald.journal.runtime.settings import Settings
from herald.journal.tables import page_event_transitions, page_events
from tests.conftest import DATABASE_URL, REDIS_URL
from tests.servers import TEST_SECRET, HeraldProcess
from tests.sseclient import open_sse

pytestmark = pytest.mark.integration

BASE = "http://herald.test"
TOPIC_KEY = Target.topic(TOPIC).stream_key
DEADLINE_S = 30.0


def settings(**overrides: Any) -> Settings:
    return Settings.load(
        redis_url=REDIS_URL, database_url=DATABASE_URL, jwt_secret=TEST_SECRET, **overrides
    )


@dataclass
class Api:
    http: httpx.AsyncClient
    state: AppState
    admin: dict[str, str]
    user: dict[str, str]
    route: str  # a route no other test uses

    def at(self, route: str) -> dict[str, str]:
        return {**self.user, "X-Page-Route": route}


@contextlib.asynccontextmanager
async def api_process(unique: str, **overrides: Any) -> AsyncIterator[Api]:
    """One API "process": its own clients, cache and window watcher."""
    built = settings(**overrides)
    auth = Authenticator(built)
    async with (
        open_state(built, auth) as state,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(built, state=state)), base_url=BASE
        ) as http,
    ):
        yield Api(
            http,
            state,
            {"Authorization": f"Bearer {auth.issue(f'{unique}-admin', ('admin',), 600)}"},
            {"Authorization": f"Bearer {auth.issue(f'{unique}-user', (), 600)}"},
            f"/{unique}/reviews",
        )


@pytest.fixture
async def api(unique: str, migrated_database: str) -> AsyncIterator[Api]:
    async with api_process(unique) as built:
        yield built
    assert built.state.engine is not None
    engine = make_engine(settings())
    try:
        await _cleanup(engine, unique)
    finally:
        await engine.dispose()


async def _cleanup(engine: AsyncEngine, unique: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            delete(page_events).where(page_events.c.page_context.like(f"/{unique}%"))
        )


def iso(t: datetime) -> str:
    return t.isoformat()


def now() -> datetime:
    return datetime.now(UTC)


async def create(api: Api, **fields: Any) -> dict[str, Any]:
    body = {"name": "campaign", "page_context": api.route, **fields}
    r = await api.http.post("/api/page-events", json=body, headers=api.admin)
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


async def current(api: Api, route: str | None = None) -> httpx.Response:
    return await api.http.get("/api/page-events/current", headers=api.at(route or api.route))


async def topic_position(redis: aioredis.Redis) -> str:
    rows = await redis.xrevrange(TOPIC_KEY, count=1)
    return rows[0][0].decode() if rows else "0-0"


async def changes(redis: aioredis.Redis, uid: str, after: str) -> list[dict[str, Any]]:
    """The ``page_event.changed`` data for ``uid`` published after ``after``."""
    rows = await redis.xrange(TOPIC_KEY, f"({after}" if after != "0-0" else "-", "+")
    found = []
    for _, fields in rows:
        envelope = orjson.loads(fields[b"e"])
        if envelope["type"] == "page_event.changed" and envelope["data"]["uid"] == uid:
            found.append(envelope["data"])
    return found


async def wait_for_changes(
    uid: str, after: str, done: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """Block on the topic stream (never a sleep) until ``done`` holds for ``uid``'s changes."""
    reader = aioredis.Redis.from_url(REDIS_URL, socket_timeout=None)
    last = after
    try:
        async with asyncio.timeout(DEADLINE_S):
            while not done(found := await changes(reader, uid, after)):
                reply = await reader.xread({TOPIC_KEY: last}, block=1000)
                for _, rows in reply or []:
                    last = rows[-1][0].decode()
    finally:
        await reader.aclose()
    return found


# ---------------------------------------------------------------- /current


async def test_a_missing_route_resolves_to_null(api: Api):
    await create(api)
    r = await api.http.get("/api/page-events/current", headers=api.user)
    assert (r.status_code, r.json()) == (200, None)
    assert r.headers["cache-control"] == "no-store"
    r = await api.http.get("/api/page-events/current")
    assert (r.status_code, r.json()["error"]) == (401, "missing_token")


async def test_the_active_matching_event_applies_by_header_or_query(api: Api):
    event = await create(
        api, start_date=iso(now() - timedelta(hours=1)), end_date=iso(now() + timedelta(hours=1))
    )
    r = await current(api)
    assert (r.status_code, r.json()["uid"]) == (200, event["uid"])
    r = await api.http.get(
        "/api/page-events/current", params={"route": api.route}, headers=api.user
    )
    assert r.json() == event
    assert (await current(api, api.route + "/other")).json() is None


async def test_future_expired_and_inactive_events_are_ignored(api: Api):
    await create(api, start_date=iso(now() + timedelta(minutes=5)))
    await create(api, end_date=iso(now() - timedelta(seconds=1)))
    await create(api, is_active=False)
    await create(
        api, start_date=iso(now() - timedelta(days=2)), end_date=iso(now() - timedelta(days=1))
    )
    assert (await current(api)).json() is None


async def test_an_event_without_dates_always_applies(api: Api):
    event = await create(api)
    assert (event["start_date"], event["end_date"]) == (None, None)
    assert (await current(api)).json()["uid"] == event["uid"]


async def test_two_active_matches_are_a_409_naming_both(api: Api):
    a = await create(api)
    b = await create(api, start_date=iso(now() - timedelta(minutes=1)))
    await create(api, start_date=iso(now() + timedelta(minutes=1)))  # not yet: no part of it
    r = await current(api)
    assert r.status_code == 409
    assert r.json()["error"] == "ambiguous_page_event"
    assert r.json()["uids"] == sorted([a["uid"], b["uid"]])


async def test_windows_are_instants_whatever_offset_they_were_written_in(api: Api):
    # 03:30 in Berlin summer time is 01:30 UTC; the same instant in India is 07:00.
    berlin = timezone(timedelta(hours=2))
    start = datetime(2026, 3, 29, 3, 30, tzinfo=berlin)
    event = await create(
        api,
        start_date="2026-03-29T03:30:00+02:00",
        end_date="2126-03-29T07:00:00+05:30",
    )
    assert event["start_date"] == "2026-03-29T01:30:00.000Z"
    assert event["end_date"] == "2126-03-29T01:30:00.000Z"
    assert start < now()
    assert (await current(api)).json()["uid"] == event["uid"]
    # A start a minute from now, written in a zone far from UTC, has not begun.
    ahead = (now() + timedelta(minutes=1)).astimezone(timezone(timedelta(hours=-9, minutes=-30)))
    r = await api.http.put(
        f"/api/page-events/{event['uid']}",
        json={"name": "later", "page_context": api.route, "start_date": ahead.isoformat()},
        headers=api.admin,
    )
    assert r.status_code == 200, r.text
    assert r.json()["start_date"].endswith("Z")
    assert (await current(api)).json() is None


# ---------------------------------------------------------------- admin API


async def test_crud_round_trip_keeps_filters_exactly_as_stored(api: Api):
    category = uuid.uuid4()
    filters = {
        "category_ids": [str(category).upper()],
        "media_types": ["video"],
        "release_rights": ["public", "internal"],
        "extraction_types": ["summary"],
        "published_from": "2026-01-01",
        "published_to": "2026-06-30",
        "search": "winter",
    }
    event = await create(api, filters=filters, limit=12, description="d")
    stored = {**filters, "category_ids": [str(category)]}
    assert event["filters"] == stored
    assert event["created_by"] == f"{api.route.split('/')[1]}-admin"
    assert event["created_at"].endswith("Z") and event["limit"] == 12
    uid = event["uid"]

    r = await api.http.get(f"/api/page-events/{uid}", headers=api.admin)
    assert r.json() == event
    r = await api.http.get(
        "/api/page-events", params={"page_context": api.route}, headers=api.admin
    )
    assert [e["uid"] for e in r.json()["events"]] == [uid]
    r = await api.http.get(
        "/api/page-events",
        params={"page_context": api.route, "active": "false"},
        headers=api.admin,
    )
    assert r.json()["events"] == []

    r = await api.http.put(
        f"/api/page-events/{uid}",
        json={"name": "renamed", "page_context": api.route, "is_active": False},
        headers=api.admin,
    )
    assert r.status_code == 200, r.text
    replaced = r.json()
    assert (replaced["name"], replaced["is_active"], replaced["filters"], replaced["limit"]) == (
        "renamed",
        False,
        {},
        None,
    )
    assert replaced["updated_at"] > event["updated_at"]
    assert replaced["created_at"] == event["created_at"]

    r = await api.http.delete(f"/api/page-events/{uid}", headers=api.admin)
    assert r.status_code == 204
    for method in ("GET", "DELETE"):
        r = await api.http.request(method, f"/api/page-events/{uid}", headers=api.admin)
        assert (r.status_code, r.json()["error"]) == (404, "page_event_not_found")
    r = await api.http.put(
        f"/api/page-events/{uid}", json={"name": "x", "page_context": "/x"}, headers=api.admin
    )
    assert r.status_code == 404
    r = await api.http.get("/api/page-events/not-a-uuid", headers=api.admin)
    assert r.status_code == 404


async def test_only_admins_change_or_list_events(api: Api):
    event = await create(api)
    body = {"name": "x", "page_context": api.route}
    for method, url in (
        ("POST", "/api/page-events"),
        ("GET", "/api/page-events"),
        ("GET", f"/api/page-events/{event['uid']}"),
        ("PUT", f"/api/page-events/{event['uid']}"),
        ("DELETE", f"/api/page-events/{event['uid']}"),
    ):
        r = await api.http.request(method, url, json=body, headers=api.user)
        assert (r.status_code, r.json()["error"]) == (403, "role_missing"), (method, url)


async def test_bad_input_is_a_422_naming_the_problem(api: Api):
    post = lambda body: api.http.post("/api/page-events", json=body, headers=api.admin)  # noqa: E731
    base = {"name": "n", "page_context": api.route}
    r = await post({**base, "filters": {"media_types": ["video"], "colour": 1, "brand": "x"}})
    assert (r.status_code, r.json()["error"]) == (422, "unknown_filter_fields")
    assert r.json()["fields"] == ["brand", "colour"]
    assert "brand, colour" in r.json()["detail"]
    r = await post({**base, "start_date": "2026-12-05T09:00:00"})
    assert (r.status_code, r.json()["error"]) == (422, "invalid_body")
    assert [p["field"] for p in r.json()["problems"]] == ["start_date"]
    r = await post({**base, "surprise": True})
    assert [p["field"] for p in r.json()["problems"]] == ["surprise"]
    for body in (
        {**base, "filters": {"category_ids": ["nope"]}},
        {**base, "filters": {"media_types": ["hologram"]}},
        {**base, "limit": 0},
        {**base, "page_context": ""},
        {"page_context": api.route},
        {**base, "start_date": "2026-12-05T10:00Z", "end_date": "2026-12-05T10:00Z"},
    ):
        r = await post(body)
        assert (r.status_code, r.json()["error"]) == (422, "invalid_body"), body
    json_type = {**api.admin, "Content-Type": "application/json"}
    r = await api.http.post("/api/page-events", content=b"{not json", headers=json_type)
    assert (r.status_code, r.json()["error"]) == (422, "invalid_json")
    r = await api.http.post("/api/page-events", content=b"{}", headers=api.admin)
    assert (r.status_code, r.json()["error"]) == (415, "unsupported_media_type")
    for query in ({"active": "yes"}, {"limit": "0"}, {"offset": "-1"}):
        r = await api.http.get("/api/page-events", params=query, headers=api.admin)
        assert r.status_code == 400, query
    r = await current(api, "/" + "x" * 600)
    assert (r.status_code, r.json()["error"]) == (400, "bad_route")


async def test_every_change_is_published_on_the_topic(api: Api, real_redis: aioredis.Redis):
    after = await topic_position(real_redis)
    event = await create(api)
    uid = event["uid"]
    moved = api.route + "/moved"
    r = await api.http.put(
        f"/api/page-events/{uid}", json={"name": "n", "page_context": moved}, headers=api.admin
    )
    assert r.status_code == 200
    assert (await api.http.delete(f"/api/page-events/{uid}", headers=api.admin)).status_code == 204
    found = await changes(real_redis, uid, after)
    assert found == [
        {"uid": uid, "page_context": api.route, "change": "created"},
        {
            "uid": uid,
            "page_context": moved,
            "change": "updated",
            "previous_page_context": api.route,
        },
        {"uid": uid, "page_context": moved, "change": "deleted"},
    ]


async def test_a_change_through_one_process_reaches_the_others_cache(api: Api, unique: str):
    async with api_process(unique) as other:
        assert (await current(other, api.route)).json() is None  # cached: nothing
        assert (await current(other, api.route)).json() is None
        assert other.state.page_events is not None
        assert other.state.page_events.cache.hits >= 1
        event = await create(api)
        assert (await current(other, api.route)).json()["uid"] == event["uid"]
        r = await api.http.put(
            f"/api/page-events/{event['uid']}",
            json={"name": "off", "page_context": api.route, "is_active": False},
            headers=api.admin,
        )
        assert r.status_code == 200
        assert (await current(other, api.route)).json() is None
        # Moved to another route: both routes' entries are stale in the other process.
        moved = api.route + "/moved"
        assert (await current(other, moved)).json() is None
        r = await api.http.put(
            f"/api/page-events/{event['uid']}",
            json={"name": "on", "page_context": moved},
            headers=api.admin,
        )
        assert r.status_code == 200
        assert (await current(other, moved)).json()["uid"] == event["uid"]
        assert (await current(other, api.route)).json() is None
        assert (await current(api, moved)).json()["uid"] == event["uid"]


# ---------------------------------------------------------------- window transitions


async def test_two_watchers_announce_each_transition_once(api: Api, real_redis: aioredis.Redis):
    """Two stores on two engines (two processes' worth), passes racing at the same
    instants: each opening and closing is claimed and published once."""
    assert api.state.engine is not None
    base = now() + timedelta(hours=1)  # after updated_at: transitions "by time"
    events = [
        await create(
            api,
            start_date=iso(base + timedelta(seconds=i)),
            end_date=iso(base + timedelta(seconds=i + 30)),
        )
        for i in range(5)
    ]
    after = await topic_position(real_redis)
    second_engine = make_engine(settings())
    try:
        clock_at = base

        def clock() -> datetime:
            return clock_at

        journal = api.state.journal
        watchers = [
            WindowWatcher(
                PageEventStore(engine),
                journal,
                watcher_id=f"w{n}",
                poll_s=1,
                catchup_s=300,
                clock=clock,
            )
            for n, engine in enumerate([api.state.engine, second_engine] * 2)
        ]
        claimed: list[Any] = []
        for step in (2.5, 10, 31, 60):
            clock_at = base + timedelta(seconds=step)
            for found, _ in await asyncio.gather(*(w.run_pass() for w in watchers)):
                claimed += [t for t in found if str(t.uid) in {e["uid"] for e in events}]
        counts = Counter((str(t.uid), t.change) for t in claimed)
        assert set(counts.values()) == {1}
        assert len(counts) == 10  # 5 openings, 5 closings
        for e in events:
            data = await changes(real_redis, e["uid"], after)
            assert [d["change"] for d in data] == ["window_opened", "window_closed"]
            assert data[0]["at"] == e["start_date"] and data[1]["at"] == e["end_date"]
        async with api.state.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(page_event_transitions.c.change).where(
                        page_event_transitions.c.event_uid == uuid.UUID(events[0]["uid"])
                    )
                )
            ).scalars()
            assert sorted(rows) == ["window_closed", "window_opened"]
    finally:
        await second_engine.dispose()


async def test_edits_and_old_transitions_are_not_announced_as_window_changes(api: Api):
    """A start moved into the past by an edit was announced as ``updated``; a
    transition older than the catch-up window is history."""
    assert api.state.page_events is not None
    store = api.state.page_events.store
    edited = await create(api, start_date=iso(now() + timedelta(hours=1)))
    r = await api.http.put(
        f"/api/page-events/{edited['uid']}",
        json={
            "name": "n",
            "page_context": api.route,
            "start_date": iso(now() - timedelta(seconds=1)),
        },
        headers=api.admin,
    )
    assert r.status_code == 200
    old = await create(api, end_date=iso(now() + timedelta(hours=1)))
    mine = {edited["uid"], old["uid"]}

    async def nothing(_: Any) -> None:
        return None

    claimed = await store.claim_transitions(now(), 300, "t", nothing)
    assert not [t for t in claimed if str(t.uid) in mine]
    late = now() + timedelta(hours=1, seconds=301)
    claimed = await store.claim_transitions(late, 300, "t", nothing)
    assert not [t for t in claimed if str(t.uid) in mine]


async def test_a_failed_announcement_leaves_the_transition_to_a_later_pass(api: Api):
    assert api.state.page_events is not None
    store = api.state.page_events.store
    start = now() + timedelta(hours=2)
    event = await create(api, start_date=iso(start))

    class Down(Exception):
        pass

    async def fail(_: Any) -> None:
        raise Down("journal down")

    with pytest.raises(Down):
        await store.claim_transitions(start + timedelta(seconds=1), 300, "t", fail)
    seen: list[Any] = []

    async def record(t: Any) -> None:
        seen.append(t)

    await store.claim_transitions(start + timedelta(seconds=2), 300, "t", record)
    assert [(str(t.uid), t.change) for t in seen if str(t.uid) == event["uid"]] == [
        (event["uid"], "window_opened")
    ]


@pytest.mark.timeout(300)
async def test_with_two_api_processes_a_subscriber_hears_each_transition_once(
    tmp_path: Any, unique: str, migrated_database: str, real_redis: aioredis.Redis
):
    """The issue's proof: two ``herald serve`` processes (both watching, polling fast
    so they race), an SSE subscriber of ``page-events`` on one, the event created
    through the other: ``window_opened`` within 1 s of a start 3 s ahead, then
    ``window_closed``, each exactly once."""
    env = {"HERALD_PAGE_EVENTS_POLL_S": "0.1", "HERALD_WORKER_IN_PROCESS": "false"}
    servers = [HeraldProcess(tmp_path / f"s{n}", **env) for n in range(2)]
    for n, server in enumerate(servers):
        (tmp_path / f"s{n}").mkdir()
        server.start(timeout=120)
    try:
        auth = Authenticator(settings())
        token = auth.issue(f"{unique}-admin", ("admin",), 600)
        headers = {"Authorization": f"Bearer {token}"}
        route = f"/{unique}/live"
        async with (
            httpx.AsyncClient(base_url=servers[0].url, timeout=30) as listen,
            # A new connection per request: the last one comes ~5 s after the first,
            # just when the server closes an idle keep-alive connection.
            httpx.AsyncClient(
                base_url=servers[1].url,
                timeout=30,
                limits=httpx.Limits(max_keepalive_connections=0),
            ) as admin,
            open_sse(listen, "/api/events", token, params={"topic": TOPIC}) as stream,
        ):
            start = now() + timedelta(seconds=3)
            end = start + timedelta(seconds=2)
            r = await admin.post(
                "/api/page-events",
                json={
                    "name": "live",
                    "page_context": route,
                    "start_date": iso(start),
                    "end_date": iso(end),
                },
                headers=headers,
            )
            assert r.status_code == 201, r.text
            uid = r.json()["uid"]
            heard: list[tuple[str, float]] = []
            async with asyncio.timeout(DEADLINE_S):
                while not heard or heard[-1][0] != "window_closed":
                    envelope = (await stream.next_event()).json()
                    if envelope.get("data", {}).get("uid") == uid:
                        heard.append((envelope["data"]["change"], time.time()))
            r = await admin.get(
                "/api/page-events/current", headers={**headers, "X-Page-Route": route}
            )
            assert r.json() is None  # closed
        assert [c for c, _ in heard] == ["created", "window_opened", "window_closed"]
        opened_at, closed_at = heard[1][1], heard[2][1]
        assert 0 <= opened_at - start.timestamp() < 1.0, opened_at - start.timestamp()
        assert 0 <= closed_at - end.timestamp() < 1.0, closed_at - end.timestamp()
        # Exactly once in the journal too, not only on this connection.
        found = [d["change"] for d in await changes(real_redis, uid, "0-0")]
        assert found == ["created", "window_opened", "window_closed"]
    finally:
        for server in servers:
            server.stop()
        engine = make_engine(settings())
        try:
            await _cleanup(engine, unique)
        finally:
            await engine.dispose()

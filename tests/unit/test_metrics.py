"""Prometheus metrics: what increments them, their labels, and ``GET /metrics``.

Counters are process-wide, so every test compares before/after values of the
labels it touches rather than absolute numbers.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

import fakeredis
import httpx
import pytest
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from herald.api.app import create_app
from herald.api.auth import Authenticator
from herald.api.middleware import REQUEST_ID, ObserveRequests
from herald.api.state import AppState, memory_state
from herald.journal.base import JournalLimits, PublishRequest
from herald.journal.memory import MemoryJournal
from herald.journal.positions import Target
from herald.journal.redis import RedisJournal
from herald.journal.runtime.metrics import ENVELOPES_DELIVERED, type_prefix
from herald.journal.runtime.settings import Settings
from herald.streams.cursor import Cursor
from herald.streams.hub_memory import MemoryHub
from herald.streams.session import Session, SessionLimits


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def delta(name: str, **labels: str) -> Callable[[], float]:
    """A function returning how much a sample grew since this call."""
    before = sample(name, **labels)
    return lambda: sample(name, **labels) - before


@pytest.fixture(params=["memory", "fakeredis"])
async def journal(request: pytest.FixtureRequest) -> AsyncIterator[MemoryJournal | RedisJournal]:
    if request.param == "memory":
        yield MemoryJournal()
        return
    client = fakeredis.FakeAsyncRedis()
    yield RedisJournal(client, JournalLimits())
    await client.aclose()


async def test_published_counts_new_envelopes_by_type_prefix(
    journal: MemoryJournal | RedisJournal,
) -> None:
    source = delta("herald_envelopes_published_total", type_prefix="source")
    other = delta("herald_envelopes_published_total", type_prefix="other")
    target = Target.user("metrics-user")
    await journal.publish(target, "source.one", {}, idempotency_key="k1")
    await journal.publish(target, "source.one", {}, idempotency_key="k1")  # a repeat
    await journal.publish_many(
        [
            PublishRequest(target, "source.two.deep", {}),
            PublishRequest(target, "mtestother.x", {}),
            PublishRequest(target, "source.three", {}),
        ]
    )
    assert source() == 3 and other() == 1


@pytest.mark.parametrize(
    ("event_type", "label"),
    [
        ("source.ingest.progress", "source"),
        ("herald.gap", "herald"),
        ("page_event.changed", "page_event"),
        ("invented.x", "other"),
        ("sourcex.y", "other"),
        (f"{'a' * 500}.x", "other"),
    ],
)
def test_type_prefix_labels_are_known_prefixes_or_other(event_type: str, label: str) -> None:
    assert type_prefix(event_type) == label


def _state(**settings: object) -> AppState:
    s = Settings.load(redis_url="memory://", jwt_secret="k" * 40, **settings)
    return memory_state(s, Authenticator(s))


@pytest.fixture
async def http() -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    state = _state(replay_budget=2)
    app = create_app(state.settings, state=state)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://herald"
    ) as client:
        yield client, state


async def test_history_counts_replays_deliveries_and_denials(
    http: tuple[httpx.AsyncClient, AppState],
) -> None:
    client, state = http
    user = "history-metrics"
    await state.journal.publish_many(
        [PublishRequest(Target.user(user), "demo.seq", {"n": i}) for i in range(7)]
    )
    headers = {"Authorization": f"Bearer {state.auth.issue(user, (), 60)}"}
    delivered = delta("herald_envelopes_delivered_total", endpoint="/api/events/history")
    replays, denials = delta("herald_replays_total"), delta("herald_replay_denials_total")
    for _ in range(2):
        assert (await client.get("/api/events/history", headers=headers)).status_code == 200
    refused = await client.get("/api/events/history", headers=headers)
    assert refused.status_code == 429
    assert (delivered(), replays(), denials()) == (14, 2, 1)


async def test_session_counts_gaps_and_live_batches() -> None:
    journal = MemoryJournal(JournalLimits(stream_maxlen=10))
    hub = MemoryHub(journal)
    target = Target.user("gap-metrics")
    (seen,) = await journal.publish_many([PublishRequest(target, "demo.seq", {})])
    await journal.publish_many([PublishRequest(target, "demo.seq", {}) for _ in range(40)])
    trimmed = delta("herald_gap_signals_total", reason="trimmed")
    counter = ENVELOPES_DELIVERED.labels(endpoint="unit-test-live")
    live_delivered = delta("herald_envelopes_delivered_total", endpoint="unit-test-live")
    session = Session(journal, {"u": target}, Cursor.parse(str(seen.id)), SessionLimits())
    emitted: list[bytes] = []
    arrived = asyncio.Event()

    async def emit(chunk: bytes) -> None:
        emitted.append(chunk)
        arrived.set()

    async with hub.subscribe(session.channels, 100) as sub:
        await session.open()
        assert [c async for c in session.replay()]
        assert trimmed() == 1  # the events after the cursor were trimmed away
        live = asyncio.create_task(session.live(sub, emit, 15.0, None, counter))
        await journal.publish_many([PublishRequest(target, "demo.seq", {}) for _ in range(3)])
        async with asyncio.timeout(2):
            while b"".join(emitted).count(b"data: ") < 3:
                arrived.clear()
                await arrived.wait()
        sub.close()
        await live
    assert live_delivered() == 3


async def test_http_requests_use_the_route_template_and_echo_a_request_id() -> None:
    seen: list[str | None] = []

    async def thing(request: Request) -> JSONResponse:
        seen.append(REQUEST_ID.get())
        return JSONResponse({"id": request.path_params["thing_id"]})

    app = ObserveRequests(Starlette(routes=[Route("/things/{thing_id}", thing)]))
    template = delta(
        "herald_http_requests_total", route="/things/{thing_id}", method="GET", status="200"
    )
    other = delta("herald_http_requests_total", route="other", method="GET", status="404")
    odd = delta(
        "herald_http_requests_total", route="/things/{thing_id}", method="OTHER", status="405"
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://herald"
    ) as client:
        mine = await client.get("/things/user-42", headers={"X-Request-ID": "req-1.a:b_c"})
        assert mine.headers["x-request-id"] == "req-1.a:b_c" and seen[-1] == "req-1.a:b_c"
        made = await client.get("/things/user-43", headers={"X-Request-ID": "no spaces allowed"})
        assert re.fullmatch(r"[0-9a-f]{16}", made.headers["x-request-id"])
        assert seen[-1] == made.headers["x-request-id"]
        fresh = await client.get("/things/user-44")
        assert fresh.headers["x-request-id"] not in (made.headers["x-request-id"], None)
        assert (await client.get("/nothing/here")).status_code == 404
        assert (await client.request("BREW", "/things/pot")).status_code == 405
    assert (template(), other(), odd()) == (3, 1, 1)


async def test_metrics_endpoint_has_every_family_and_no_ids(
    http: tuple[httpx.AsyncClient, AppState],
) -> None:
    client, state = http
    user = "user-4711"
    token = state.auth.issue(user, ("admin",), 60)
    r = await client.post(
        "/api/publish",
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": "pub-1"},
        json={"user": user, "type": "source.ingest.progress", "data": {}},
    )
    assert r.status_code == 201 and r.headers["x-request-id"] == "pub-1"
    events = await client.get("/api/events", params={"token": "not-a-jwt"})
    assert events.status_code == 401 and events.headers["x-request-id"]
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for family in (
        "herald_envelopes_published_total",
        "herald_envelopes_delivered_total",
        "herald_gap_signals_total",
        "herald_sse_connections",
        "herald_replays_total",
        "herald_replay_denials_total",
        "herald_hub_reconnects_total",
        "herald_writer_flush_rows",
        "herald_writer_flush_seconds",
        "herald_writer_flush_failures_total",
        "herald_tasks_total",
        "herald_task_seconds",
        "herald_http_requests_total",
    ):
        assert f"# TYPE {family} " in text, family
    published = {"route": "/api/publish", "method": "POST", "status": "201"}
    assert sample("herald_http_requests_total", **published) >= 1
    refused = {"route": "/api/events", "method": "GET", "status": "401"}
    assert sample("herald_http_requests_total", **refused) >= 1
    assert user not in text and "pub-1" not in text

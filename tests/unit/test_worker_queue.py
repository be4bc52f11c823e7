"""The producer side over fakeredis: enqueue checks, status records, heartbeats,
and the HTTP routes ``POST /api/tasks`` and ``GET /api/tasks/{id}``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import fakeredis
import httpx
import pytest

from herald.api.app import create_app
from herald.api.auth import Authenticator
from herald.api.state import memory_state
from herald.api.tickets import RedisTicketStore
from herald.journal.positions import ZERO_ID, Target
from herald.journal.redis import RedisJournal
from herald.journal.runtime.settings import Settings
from herald.journal.tasks.keys import WORKERS_KEY, tasks_key
from herald.journal.tasks.queue import MAX_TASK_BYTES, InvalidTask, TaskQueue, TaskTooLarge, now_ms

SECRET = "k" * 40


@pytest.fixture
async def queue() -> AsyncIterator[TaskQueue]:
    client = fakeredis.FakeAsyncRedis()
    settings = Settings(redis_url="redis://fake", worker_stale_s=1.0)  # type: ignore[call-arg]
    yield TaskQueue(client, RedisJournal(client), settings)
    await client.aclose()


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("Bad Kind", "u", {}), {}),
        (("ok.kind", "no spaces", {}), {}),
        (("ok.kind", "u", {}), {"queue": "{tag}"}),
        (("ok.kind", "u", {}), {"task_id": "has space"}),
        (("ok.kind", "u", {}), {"events": "Not.Valid"}),
        (("ok.kind", "u", {}), {"max_attempts": 0}),
        (("ok.kind", "u", {"x": object()}), {}),
    ],
)
async def test_enqueue_refuses_bad_input_before_touching_redis(queue, args, kwargs):
    with pytest.raises(InvalidTask):
        await queue.enqueue(*args, **kwargs)
    assert await queue.redis.dbsize() == 0


async def test_enqueue_refuses_a_huge_payload(queue):
    with pytest.raises(TaskTooLarge):
        await queue.enqueue("ok.kind", "u", {"blob": "x" * MAX_TASK_BYTES})


async def test_enqueue_publishes_queued_then_adds_the_task(queue):
    task_id = await queue.enqueue(
        "source.ingest", "u1", {"a": 1}, context={"source_id": "s"}, queue="ingest"
    )
    page = await queue.journal.read_after(Target.user("u1"), ZERO_ID, limit=10)
    assert [e.type for e in page.entries] == ["source.ingest.queued"]
    assert await queue.redis.xlen(tasks_key("ingest")) == 1
    status = await queue.status(task_id)
    assert status is not None
    assert (status["status"], status["user"], status["queue"]) == ("queued", "u1", "ingest")
    assert await queue.result(task_id) is None


async def test_a_continuation_publishes_no_queued_and_keeps_the_first_queued_at(queue):
    task_id = await queue.enqueue("mcp.oauth.connect", "u1", {}, events="mcp.oauth")
    first = (await queue.status(task_id) or {})["queued_at"]
    again = await queue.enqueue(
        "mcp.oauth.exchange", "u1", {}, task_id=task_id, events="mcp.oauth", publish_queued=False
    )
    assert again == task_id
    page = await queue.journal.read_after(Target.user("u1"), ZERO_ID, limit=10)
    assert [e.type for e in page.entries] == ["mcp.oauth.queued"]
    status = await queue.status(task_id) or {}
    assert status["queued_at"] == first and status["kind"] == "mcp.oauth.exchange"


async def test_heartbeats_are_unix_ms_and_stale_fields_are_dropped(queue):
    await queue.heartbeat("w1")
    seen = await queue.workers()
    assert list(seen) == ["w1"] and abs(seen["w1"] - now_ms()) < 5000
    await queue.redis.hset(WORKERS_KEY, "gone", now_ms() - 11_000)  # > 10 x stale (1 s)
    await queue.redis.hset(WORKERS_KEY, "stale", now_ms() - 2_000)
    assert set(await queue.workers()) == {"w1", "stale"}
    assert set(await queue.live_workers()) == {"w1"}
    assert not await queue.redis.hexists(WORKERS_KEY, "gone")
    await queue.forget_worker("w1")
    assert "w1" not in await queue.workers()


@pytest.fixture
async def http() -> AsyncIterator[tuple[httpx.AsyncClient, Authenticator, TaskQueue]]:
    settings = Settings(jwt_secret=SECRET, redis_url="redis://fake")  # type: ignore[arg-type]
    auth = Authenticator(settings)
    client = fakeredis.FakeAsyncRedis()
    journal = RedisJournal(client)
    tasks = TaskQueue(client, journal, settings)
    state = replace(
        memory_state(settings, auth),
        journal=journal,
        tickets=RedisTicketStore(client, 30),
        tasks=tasks,
        redis=client,
    )
    app = create_app(settings, state=state)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://herald"
    ) as h:
        yield h, auth, tasks
    await client.aclose()


def _bearer(auth: Authenticator, user: str, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {auth.issue(user, roles, 60)}"}


async def test_http_enqueue_for_a_user_and_status_for_owner_and_admin_only(http):
    h, auth, tasks = http
    r = await h.post(
        "/api/tasks",
        headers=_bearer(auth, "backend", "service"),
        json={"kind": "source.ingest", "payload": {"x": 1}, "user": "alice"},
    )
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    assert r.json()["status_url"] == f"/api/tasks/{task_id}"
    page = await tasks.journal.read_after(Target.user("alice"), ZERO_ID, limit=10)
    assert [e.type for e in page.entries] == ["source.ingest.queued"]

    mine = await h.get(f"/api/tasks/{task_id}", headers=_bearer(auth, "alice"))
    assert mine.status_code == 200 and mine.json()["status"] == "queued"
    assert mine.json()["user"] == "alice"
    admin = await h.get(f"/api/tasks/{task_id}", headers=_bearer(auth, "root", "admin"))
    assert admin.status_code == 200
    other = await h.get(f"/api/tasks/{task_id}", headers=_bearer(auth, "mallory"))
    unknown = await h.get("/api/tasks/nope", headers=_bearer(auth, "mallory"))
    assert other.status_code == unknown.status_code == 404
    assert other.json() == {**unknown.json(), "detail": other.json()["detail"]}


async def test_http_enqueue_owner_defaults_to_the_caller(http):
    h, auth, tasks = http
    r = await h.post("/api/tasks", headers=_bearer(auth, "ops", "admin"), json={"kind": "a.b"})
    assert r.status_code == 202
    assert (await tasks.status(r.json()["task_id"]) or {})["user"] == "ops"


@pytest.mark.parametrize(
    ("body", "roles", "status", "code"),
    [
        ({"kind": "a.b"}, (), 403, "role_missing"),
        ({"kind": "Not A Kind"}, ("admin",), 422, "invalid_body"),
        ({"kind": "a.b", "payload": []}, ("admin",), 422, "invalid_body"),
        ({"kind": "a.b", "user": "{x}"}, ("admin",), 422, "invalid_body"),
        ({"kind": "a.b", "extra": 1}, ("admin",), 422, "invalid_body"),
        (
            {"kind": "a.b", "payload": {"b": "x" * MAX_TASK_BYTES}},
            ("admin",),
            413,
            "task_too_large",
        ),
    ],
)
async def test_http_enqueue_refusals(http, body: dict[str, Any], roles, status, code):
    h, auth, tasks = http
    r = await h.post("/api/tasks", headers=_bearer(auth, "ops", *roles), json=body)
    assert (r.status_code, r.json()["error"]) == (status, code)
    assert await tasks.redis.exists(tasks_key("default")) == 0

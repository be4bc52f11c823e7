"""The HTTP publish half over fakeredis: status codes and JSON error bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import fakeredis
import httpx
import orjson
import pytest

from herald.api.app import create_app
from herald.api.auth import Authenticator
from herald.api.state import memory_state
from herald.api.tickets import RedisTicketStore
from herald.journal.base import JournalLimits
from herald.journal.positions import ZERO_ID, Target
from herald.journal.redis import RedisJournal
from herald.journal.runtime.settings import Settings

SECRET = "k" * 40


@pytest.fixture
async def env() -> AsyncIterator[tuple[httpx.AsyncClient, Authenticator, RedisJournal]]:
    settings = Settings(jwt_secret=SECRET, max_envelope_bytes=1024, redis_url="redis://fake")  # type: ignore[arg-type]
    auth = Authenticator(settings)
    client = fakeredis.FakeAsyncRedis()
    journal = RedisJournal(client, JournalLimits(max_envelope_bytes=1024))
    state = replace(
        memory_state(settings, auth), journal=journal, tickets=RedisTicketStore(client, 30)
    )
    app = create_app(settings, state=state)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://herald"
    ) as http:
        yield http, auth, journal
    await client.aclose()


def _bearer(auth: Authenticator, *roles: str, user: str = "ops") -> dict[str, str]:
    return {"Authorization": f"Bearer {auth.issue(user, roles, 60)}"}


async def test_publish_returns_201_and_stores_the_envelope(env):
    http, auth, journal = env
    r = await http.post(
        "/api/publish",
        headers=_bearer(auth, "admin"),
        json={"user": "alice", "type": "source.ingest.progress", "data": {"current": 40}},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["stream"] == "user:alice" and body["duplicate"] is False
    (info,) = [await journal.info(Target.user("alice"))]
    assert str(info.last) == body["id"]


async def test_repeated_idempotency_key_is_200_with_the_same_id(env):
    http, auth, journal = env
    payload = {"topic": "printers", "type": "printer.status", "data": {}, "idempotency_key": "p1"}
    first = await http.post("/api/publish", headers=_bearer(auth, "service"), json=payload)
    again = await http.post("/api/publish", headers=_bearer(auth, "service"), json=payload)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"] and again.json()["duplicate"] is True
    assert (await journal.info(Target.topic("printers"))).length == 1


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "missing_token"),
        ({"Authorization": "Basic abc"}, 401, "bad_header"),
        ({"Authorization": "Bearer nope"}, 401, "malformed_token"),
    ],
)
async def test_unauthenticated_requests_are_401_json(env, headers, status, code):
    http, _, _ = env
    r = await http.post("/api/publish", headers=headers, json={})
    assert r.status_code == status and r.json()["error"] == code
    assert r.headers["www-authenticate"].startswith("Bearer")


async def test_a_plain_user_token_cannot_publish(env):
    http, auth, _ = env
    r = await http.post(
        "/api/publish",
        headers=_bearer(auth),
        json={"user": "ops", "type": "a.b", "data": {}},
    )
    assert r.status_code == 403 and r.json()["error"] == "role_missing"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 422, "invalid_json"),
        (b'{"user":"a","type":"a.b","data":[1]}', 422, "invalid_body"),
        (b'{"type":"a.b","data":{}}', 422, "invalid_body"),
        (b'{"user":"a","topic":"t","type":"a.b","data":{}}', 422, "invalid_body"),
        (b'{"user":"a{b}","type":"a.b","data":{}}', 422, "invalid_body"),
        (b'{"user":"a","type":"Bad","data":{}}', 422, "invalid_envelope"),
        (b'{"user":"a","type":"a.b","data":{},"extra":1}', 422, "invalid_body"),
        (
            b'{"user":"a","type":"a.b","data":{"blob":"' + b"x" * 1500 + b'"}}',
            413,
            "envelope_too_large",
        ),
        (
            b'{"user":"a","type":"a.b","data":{"blob":"' + b"x" * 9000 + b'"}}',
            413,
            "body_too_large",
        ),
    ],
)
async def test_bad_bodies_are_4xx_with_a_reason(env, body, status, code):
    http, auth, _ = env
    headers = {**_bearer(auth, "admin"), "Content-Type": "application/json"}
    r = await http.post("/api/publish", headers=headers, content=body)
    assert r.status_code == status, r.text
    assert r.json()["error"] == code and r.json()["detail"]


async def test_ticket_is_single_use_and_carries_the_caller(env):
    http, auth, _ = env
    r = await http.post("/api/events/ticket", headers=_bearer(auth, user="bob"))
    assert r.status_code == 201
    ticket = r.json()["ticket"]
    me = await http.get("/api/whoami", params={"ticket": ticket})
    assert me.status_code == 200 and me.json()["user"] == "bob"
    again = await http.get("/api/whoami", params={"ticket": ticket})
    assert again.status_code == 401 and again.json()["error"] == "bad_ticket"


async def test_token_from_cookie_and_query(env):
    http, auth, _ = env
    token = auth.issue("carol", (), 60)
    by_query = await http.get("/api/whoami", params={"token": token})
    by_cookie = await http.get("/api/whoami", headers={"Cookie": f"herald_token={token}"})
    assert by_query.json()["user"] == by_cookie.json()["user"] == "carol"


async def test_unknown_route_and_method_are_json(env):
    http, _, _ = env
    assert (await http.get("/nope")).json()["error"] == "not_found"
    r = await http.get("/api/publish")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


async def test_healthz_needs_nothing(env):
    http, _, _ = env
    body = orjson.loads((await http.get("/healthz")).content)
    assert body["status"] == "ok" and body["uptime_s"] >= 0


@pytest.mark.parametrize("source", ["not a uri", "/x?q=1", "/x#f", "/%zz"])
async def test_a_publisher_source_that_is_not_a_uri_reference_is_422(env, source):
    http, auth, _ = env
    body = {"user": "alice", "type": "a.b", "data": {}, "source": source}
    r = await http.post("/api/publish", headers=_bearer(auth, "admin"), json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_envelope" and "URI-reference" in r.json()["detail"]


async def test_a_publisher_source_is_kept_before_the_stream_path(env):
    http, auth, journal = env
    body = {"user": "al|ce", "type": "a.b", "data": {}, "source": "https://shop.example/orders"}
    r = await http.post("/api/publish", headers=_bearer(auth, "admin"), json=body)
    assert r.status_code == 201, r.text
    page = await journal.read_after(Target.user("al|ce"), ZERO_ID, limit=1)
    env_ = orjson.loads(page.entries[0].envelope)
    assert env_["source"] == "https://shop.example/orders/users/al%7Cce"

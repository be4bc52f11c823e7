"""Requests refused at the door, in one process over real Redis and PostgreSQL
(issue 11): what PostgreSQL cannot store, cross-site writes, malformed names and
cursors, and credentials used beyond what they were given for."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from herald.api.app import create_app
from herald.api.auth import Authenticator
from herald.api.state import AppState, open_state
from herald.journal.positions import Target
from herald.journal.runtime.settings import Settings
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.integration

SECRET = "d" * 40


@dataclass
class Door:
    http: httpx.AsyncClient
    auth: Authenticator
    state: AppState

    def bearer(self, user: str, *roles: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.auth.issue(user, roles, 300)}"}


@pytest.fixture
async def door(migrated_database: str) -> AsyncIterator[Door]:
    settings = Settings.load(
        redis_url=REDIS_URL, database_url=migrated_database, jwt_secret=SECRET, replay_budget=3
    )
    auth = Authenticator(settings)
    async with open_state(settings, auth) as state:
        app = create_app(settings, state=state)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://herald"
        ) as http:
            yield Door(http, auth, state)


async def _message(door: Door, user: str) -> str:
    made = await door.http.post("/api/messages", json={}, headers=door.bearer(user))
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


# -- 1: what PostgreSQL cannot store ------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"type": "answer", "payload": {"t": "\u0000"}},
        {"type": "answer", "payload": {"deep": [{"k\u0000": 1}]}},
        {
            "events": [
                {"type": "answer", "payload": {"t": "ok"}},
                {"type": "answer", "payload": {"t": "a\u0000b"}},
            ]
        },
    ],
)
async def test_nul_in_a_message_event_is_refused_with_422(door: Door, unique: str, body: dict):
    mid = await _message(door, unique)
    r = await door.http.post(f"/api/messages/{mid}/events", json=body, headers=door.bearer(unique))
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_character" and "U+0000" in r.json()["detail"]
    # Nothing was numbered for it; the stream takes the next event as its first.
    ok = await door.http.post(
        f"/api/messages/{mid}/events",
        json={"type": "answer", "payload": {"t": "fine"}},
        headers=door.bearer(unique),
    )
    assert ok.status_code == 201 and ok.json() == {"sequence_nos": [0], "stored": True}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/publish", {"user": "x", "type": "a.b", "data": {"v": "\u0000"}}),
        ("/api/messages", {"id": str(uuid.uuid4()), "user": "a\u0000"}),
        ("/api/sources", {"kind": "web", "name": "n\u0000"}),
        ("/api/tasks", {"kind": "x.y", "payload": {"\u0000": 1}}),
    ],
)
async def test_nul_anywhere_in_a_json_body_is_refused_with_422(door: Door, path: str, body: dict):
    r = await door.http.post(path, json=body, headers=door.bearer("ops", "admin", "service"))
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_character"


# -- 7: small things that were a 500 or went around a limit ------------------------------


@pytest.mark.parametrize("cursor", ["--1", "-", "1-", "- 1", "\uff11", "9" * 13, "-2"])
async def test_a_malformed_message_cursor_is_a_400(door: Door, unique: str, cursor: str):
    mid = await _message(door, unique)
    r = await door.http.get(
        f"/api/messages/{mid}/events",
        params={"after": cursor, "format": "json"},
        headers=door.bearer(unique),
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "bad_cursor"


async def test_message_history_reads_spend_the_replay_budget(door: Door, unique: str):
    mid = await _message(door, unique)
    auth = door.bearer(unique)
    appended = await door.http.post(
        f"/api/messages/{mid}/events", json={"type": "answer", "payload": {}}, headers=auth
    )
    assert appended.status_code == 201
    page = {"format": "json", "after": "-1"}
    statuses = [
        (await door.http.get(f"/api/messages/{mid}/events", params=page, headers=auth)).status_code
        for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    # Reading past the end replays nothing and costs nothing.
    tail = {"format": "json", "after": "0"}
    r = await door.http.get(f"/api/messages/{mid}/events", params=tail, headers=auth)
    assert r.status_code == 200 and r.json()["events"] == []


@pytest.mark.parametrize(
    "data",
    [
        {"expires_at": 5},
        {"expires_at": ["2026-01-01T00:00:00Z"]},
        {"expires_at": "not a time"},
        {"code": {"nested": True}},
    ],
)
async def test_oauth_status_with_odd_stored_fields_is_not_a_500(
    door: Door, unique: str, data: dict
):
    task_id = f"t{uuid.uuid4().hex[:12]}"
    await door.state.journal.publish(
        Target.user(unique), "mcp.oauth.awaiting_redirect", {"task_id": task_id, **data}
    )
    r = await door.http.get(f"/api/oauth/{task_id}/status", headers=door.bearer(unique))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "awaiting_redirect"

"""Source and attachment routes on a server with no Redis or database (``memory://``):
they answer a JSON 503 naming what is missing, after authentication, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from herald.api.app import create_app
from herald.api.auth import Authenticator
from herald.api.state import memory_state
from herald.journal.runtime.db import make_engine
from herald.journal.runtime.settings import Settings

SECRET = "k" * 40


@pytest.fixture
async def http() -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    settings = Settings.load(jwt_secret=SECRET, redis_url="memory://", database_url="")
    auth = Authenticator(settings)
    app = create_app(settings, state=memory_state(settings, auth))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://herald"
    ) as client:
        yield client, auth.issue("alice")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/sources"),
        ("GET", "/api/sources/00000000-0000-0000-0000-000000000000"),
        ("POST", "/api/sources/00000000-0000-0000-0000-000000000000/reingest"),
        ("POST", "/api/sources/00000000-0000-0000-0000-000000000000/sync"),
        ("POST", "/api/attachments"),
        ("GET", "/api/attachments/00000000-0000-0000-0000-000000000000"),
    ],
)
async def test_without_services_every_route_is_a_named_503(
    http: tuple[httpx.AsyncClient, str], method: str, path: str
):
    client, token = http
    files = {"file": ("a.txt", b"words", "text/plain")} if method == "POST" else None
    anonymous = await client.request(method, path, files=files)
    assert anonymous.status_code == 401
    r = await client.request(
        method, path, files=files, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 503
    assert r.json()["error"] == "database_unavailable"
    assert "no database" in r.json()["detail"]


async def test_with_a_database_but_no_task_queue_uploads_are_a_named_503():
    settings = Settings.load(
        jwt_secret=SECRET,
        redis_url="memory://",
        database_url="postgresql+psycopg://nobody@127.0.0.1:1/none",
    )
    auth = Authenticator(settings)
    state = memory_state(settings, auth)
    state.engine = make_engine(settings)  # never connects: the queue is checked first
    app = create_app(settings, state=state)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://herald"
        ) as client:
            for path in ("/api/sources", "/api/attachments"):
                r = await client.post(
                    path,
                    files={"file": ("a.txt", b"words", "text/plain")},
                    headers={"Authorization": f"Bearer {auth.issue('alice')}"},
                )
                assert r.status_code == 503
                assert r.json()["error"] == "tasks_unavailable"
    finally:
        await state.engine.dispose()

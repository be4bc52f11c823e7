"""``?user=`` on ``GET /api/events`` and ``/history``: an admin reads another user's
stream; anyone else naming another user is refused with a JSON 403, never ignored."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from herald.api.app import create_app
from herald.api.auth import Authenticator
from herald.api.state import AppState, memory_state
from herald.journal.positions import Target
from herald.journal.runtime.settings import Settings

SECRET = "u" * 40


@pytest.fixture
async def env() -> AsyncIterator[tuple[httpx.AsyncClient, Authenticator, AppState]]:
    settings = Settings(jwt_secret=SECRET, redis_url="memory://")  # type: ignore[arg-type]
    auth = Authenticator(settings)
    state = memory_state(settings, auth)
    app = create_app(settings, state=state)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://herald"
    ) as http:
        yield http, auth, state


def _bearer(auth: Authenticator, user: str, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {auth.issue(user, roles, 60)}"}


async def _publish(state: AppState, user: str, n: int) -> None:
    await state.journal.publish(Target.user(user), "demo.seq", {"n": n})


async def test_an_admin_reads_another_users_history(env):
    http, auth, state = env
    await _publish(state, "alice", 1)
    await _publish(state, "alice", 2)
    await _publish(state, "dev", 99)
    r = await http.get("/api/events/history?user=alice", headers=_bearer(auth, "dev", "admin"))
    assert r.status_code == 200, r.text
    assert [e["data"]["n"] for e in r.json()["events"]] == [1, 2]
    assert {e["subject"] for e in r.json()["events"]} == {"user:alice"}


async def test_without_user_an_admin_reads_their_own_history(env):
    http, auth, state = env
    await _publish(state, "alice", 1)
    await _publish(state, "dev", 99)
    r = await http.get("/api/events/history", headers=_bearer(auth, "dev", "admin"))
    assert [e["data"]["n"] for e in r.json()["events"]] == [99]


async def test_naming_oneself_is_fine_without_admin(env):
    http, auth, state = env
    await _publish(state, "bob", 7)
    r = await http.get("/api/events/history?user=bob", headers=_bearer(auth, "bob"))
    assert r.status_code == 200, r.text
    assert [e["data"]["n"] for e in r.json()["events"]] == [7]


@pytest.mark.parametrize("path", ["/api/events/history", "/api/events"])
@pytest.mark.parametrize("roles", [(), ("service",)])
async def test_a_non_admin_naming_another_user_is_403_json(env, path, roles):
    http, auth, state = env
    await _publish(state, "alice", 1)
    r = await http.get(f"{path}?user=alice", headers=_bearer(auth, "bob", *roles))
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"] == "user_forbidden" and "admin" in r.json()["detail"]


@pytest.mark.parametrize("path", ["/api/events/history", "/api/events"])
async def test_a_malformed_user_is_400_for_an_admin(env, path):
    http, auth, _ = env
    r = await http.get(f"{path}?user=no%20spaces", headers=_bearer(auth, "dev", "admin"))
    assert r.status_code == 400 and r.json()["error"] == "bad_user"

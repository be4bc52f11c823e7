"""Cross-site requests with the cookie credential are refused (issue 11, #2): one
check for every state-changing route, plus JSON routes requiring a JSON body."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import fakeredis
import httpx
import pytest

from herald.api.app import create_app
from herald.api.auth import Authenticator
from herald.api.crosssite import is_cross_site
from herald.api.state import memory_state
from herald.api.tickets import RedisTicketStore
from herald.journal.base import JournalLimits
from herald.journal.redis import RedisJournal
from herald.journal.runtime.settings import Settings

SECRET = "c" * 40
EVIL = "https://evil.example"


@pytest.fixture
async def env() -> AsyncIterator[tuple[httpx.AsyncClient, Authenticator]]:
    settings = Settings(
        jwt_secret=SECRET,  # type: ignore[arg-type]
        redis_url="redis://fake",
        public_url="https://herald.example",
    )
    auth = Authenticator(settings)
    client = fakeredis.FakeAsyncRedis()
    state = replace(
        memory_state(settings, auth),
        journal=RedisJournal(client, JournalLimits()),
        tickets=RedisTicketStore(client, 30),
    )
    app = create_app(settings, state=state)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://herald.local"
    ) as http:
        http.headers["Cookie"] = f"herald_token={auth.issue('ops', ('admin', 'service'), 60)}"
        yield http, auth
    await client.aclose()


PUBLISH = b'{"user":"ops","type":"a.b","data":{}}'
WRITES = [
    ("/api/publish", PUBLISH),
    ("/api/messages", b"{}"),
    ("/api/oauth/connect", b'{"server_url":"https://mcp.example/mcp"}'),
    ("/api/sources", b'{"connector":{"path":"/x"}}'),
    ("/api/attachments", b"x"),
    ("/api/events/ticket", b""),
    ("/api/tasks", b'{"kind":"herald.noop"}'),
]


@pytest.mark.parametrize(("path", "body"), WRITES)
@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": EVIL},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
    ],
)
async def test_a_cross_site_write_with_the_cookie_is_403(env, path, body, headers):
    http, _ = env
    r = await http.post(path, content=body, headers={"Content-Type": "text/plain", **headers})
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "cross_site_request"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://herald.local", "Sec-Fetch-Site": "same-origin"},
        {"Origin": "https://herald.example"},  # HERALD_PUBLIC_URL, behind a proxy
        {"Sec-Fetch-Site": "same-origin"},
        {},  # not a browser: nothing to forge
    ],
)
async def test_a_same_site_write_with_the_cookie_is_served(env, headers):
    http, _ = env
    r = await http.post(
        "/api/publish", content=PUBLISH, headers={"Content-Type": "application/json", **headers}
    )
    assert r.status_code == 201, r.text


async def test_a_bearer_token_is_not_subject_to_the_origin_check(env):
    http, auth = env
    bearer = {"Authorization": f"Bearer {auth.issue('ops', ('admin',), 60)}"}
    r = await http.post(
        "/api/publish",
        content=PUBLISH,
        headers={"Content-Type": "application/json", "Origin": EVIL, **bearer},
    )
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_json_routes_require_a_json_content_type(env, content_type):
    http, auth = env
    headers = {"Authorization": f"Bearer {auth.issue('ops', ('admin',), 60)}"}
    if content_type:
        headers["Content-Type"] = content_type
    r = await http.post("/api/publish", content=PUBLISH, headers=headers)
    assert r.status_code == 415, r.text
    assert r.json()["error"] == "unsupported_media_type"
    ok = await http.post(
        "/api/publish",
        content=PUBLISH,
        headers={**headers, "Content-Type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 201


@pytest.mark.parametrize(
    ("origin", "site", "host", "public", "cross"),
    [
        ("https://evil.example", None, "herald.local", "", True),
        ("http://herald.local", None, "herald.local", "", False),
        ("http://herald.local:80", None, "herald.local", "", False),
        ("http://herald.local:8080", None, "herald.local", "", True),
        ("https://herald.example", None, "10.0.0.5:8000", "https://herald.example", False),
        ("https://herald.example.evil", None, "herald.example", "", True),
        ("null", None, "herald.local", "", True),
        ("file://", None, "herald.local", "", True),
        (None, "cross-site", "herald.local", "", True),
        (None, "same-site", "herald.local", "", True),
        (None, "same-origin", "herald.local", "", False),
        (None, "none", "herald.local", "", False),
        (None, None, "herald.local", "", False),
    ],
)
def test_the_cross_site_verdict(origin, site, host, public, cross):
    assert is_cross_site(origin, site, host, public) is cross

"""MCP OAuth end to end: Herald's routes and tasks against a real authorization server.

The authorization server (``tests/oauth_server.py``, authlib) listens on loopback;
Herald's app runs in process over real Redis and PostgreSQL, and its tasks run in
the real worker runtime (``run_until_idle``) on a queue of this test's own.  The
test plays the browser: it opens the authorization URL, takes the redirect, and
brings it to Herald's callback.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from sqlalchemy import delete, select

from herald.api.app import create_app
from herald.api.auth import Authenticator
from herald.api.state import AppState, open_state
from herald.journal.envelope import decode
from herald.journal.oauth.secretbox import secretbox_for
from herald.journal.oauth.tokens import load_token_set
from herald.journal.positions import ZERO_ID, Target
from herald.journal.runtime.settings import Settings
from herald.journal.tables import oauth_tokens
from herald.journal.tasks.keys import dead_key, retry_key, tasks_key
from herald.journal.tasks.queue import TaskQueue
from herald.workers.kinds import default_registry
from herald.workers.runtime import Worker
from tests.conftest import DATABASE_URL, REDIS_URL
from tests.oauth_server import AuthorizationServer
from tests.servers import TEST_SECRET, free_port

pytestmark = pytest.mark.integration

HERALD = "http://herald.test"
CALLBACK = HERALD + "/api/oauth/callback"


class PrivateQueue(TaskQueue):
    """Sends every task to this test's queue: the shared ``default`` queue is read by
    other tests' servers, whose workers would run (and store) our tasks elsewhere."""

    def __init__(self, state: AppState, name: str) -> None:
        assert state.redis is not None
        super().__init__(state.redis, state.journal, state.settings)
        self.name = name

    async def enqueue(self, *args: Any, **kwargs: Any) -> str:
        return await super().enqueue(*args, **{**kwargs, "queue": self.name})


@dataclass
class Rig:
    http: httpx.AsyncClient
    state: AppState
    tasks: PrivateQueue
    user: str
    headers: dict[str, str]

    async def connect(self, server_url: str, **extra: str) -> str:
        r = await self.http.post(
            "/api/oauth/connect", headers=self.headers, json={"server_url": server_url, **extra}
        )
        assert r.status_code == 202, r.text
        task_id: str = r.json()["task_id"]
        assert r.json()["status_url"] == f"/api/oauth/{task_id}/status"
        return task_id

    async def drain(self) -> None:
        assert self.state.redis is not None
        worker = Worker(
            default_registry(),
            redis=self.state.redis,
            journal=self.state.journal,
            settings=self.state.settings,
            engine=self.state.engine,
            queue=self.tasks,
            queues=[self.tasks.name],
        )
        try:
            await worker.run_until_idle()
        finally:
            # Readiness counts workers by heartbeat: do not leave this one behind.
            await self.tasks.forget_worker(worker.consumer)

    async def events(self) -> list[tuple[str, dict[str, Any], bytes]]:
        page = await self.state.journal.read_after(Target.user(self.user), ZERO_ID, limit=1000)
        out = []
        for entry in page.entries:
            envelope = decode(entry.envelope)
            if envelope.type.startswith("mcp.oauth."):
                out.append((envelope.type, envelope.data, entry.envelope))
        return out

    async def types(self) -> list[str]:
        return [t for t, _, _ in await self.events()]

    async def authorization_url(self) -> str:
        (data,) = [d for t, d, _ in await self.events() if t == "mcp.oauth.awaiting_redirect"]
        url: str = data["authorization_url"]
        return url

    async def callback(self, query: dict[str, str], **headers: str) -> httpx.Response:
        return await self.http.get("/api/oauth/callback?" + urlencode(query), headers=headers)

    async def status(self, task_id: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.http.get(f"/api/oauth/{task_id}/status", headers=headers or self.headers)


async def browse(authorization_url: str) -> dict[str, str]:
    """Open the authorization URL as a browser would and return the redirect's query."""
    async with httpx.AsyncClient() as browser:
        r = await browser.get(authorization_url)
    assert r.status_code == 302, r.text
    location = r.headers["location"]
    assert location.startswith(CALLBACK + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@pytest.fixture
async def rig(unique: str, migrated_database: str) -> AsyncIterator[Rig]:
    settings = Settings.load(
        redis_url=REDIS_URL,
        database_url=DATABASE_URL,
        jwt_secret=TEST_SECRET,
        public_url=HERALD,
        task_backoff_s=0.01,  # failed discovery is retried: keep the drain short
        # The test authorization server listens on loopback, which is refused
        # unless allowed (and 127.0.0.1 only: other loopback addresses stay refused).
        oauth_allowed_networks=["127.0.0.1/32"],
    )
    auth = Authenticator(settings)
    async with open_state(settings, auth) as state:
        tasks = PrivateQueue(state, f"oauth-{unique}")
        state.tasks = tasks
        app = create_app(settings, state=state)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=HERALD
        ) as http:
            headers = {"Authorization": f"Bearer {auth.issue(unique, (), 600)}"}
            yield Rig(http, state, tasks, unique, headers)
        assert state.redis is not None and state.engine is not None
        async with state.engine.begin() as conn:
            await conn.execute(delete(oauth_tokens).where(oauth_tokens.c.user_id == unique))
        await state.redis.delete(
            Target.user(unique).stream_key,
            Target.user(unique).meta_key,
            tasks_key(tasks.name),
            retry_key(tasks.name),
            dead_key(tasks.name),
        )


@pytest.fixture
def auth_server() -> Iterator[AuthorizationServer]:
    with AuthorizationServer() as server:
        yield server


async def test_the_flow_completes_and_stores_the_tokens_sealed(rig: Rig, auth_server):
    task_id = await rig.connect(auth_server.mcp_url)
    await rig.drain()
    assert await rig.types() == ["mcp.oauth.queued", "mcp.oauth.awaiting_redirect"]
    url = await rig.authorization_url()
    assert url.startswith(auth_server.issuer + "/authorize?")
    # Herald registered itself (RFC 7591) for its callback, as a confidential client.
    (registration,) = auth_server.record.registrations
    assert registration["redirect_uris"] == [CALLBACK]
    assert registration["token_endpoint_auth_method"] == "client_secret_basic"

    redirect = await browse(url)
    assert redirect["iss"] == auth_server.issuer
    r = await rig.callback(redirect)
    assert r.status_code == 202, r.text
    assert r.json()["task_id"] == task_id
    await rig.drain()

    events = await rig.events()
    assert [t for t, _, _ in events] == [
        "mcp.oauth.queued",
        "mcp.oauth.awaiting_redirect",
        "mcp.oauth.completed",
    ]
    completed = events[-1][1]
    assert completed["task_id"] == task_id
    assert completed["server_url"] == auth_server.mcp_url
    assert completed["scope"] == "tools.read"
    assert completed["expires_at"].endswith("Z")

    # PKCE S256 and the resource indicator went to the authorization server.
    (asked,) = auth_server.record.authorize_requests
    (exchanged,) = auth_server.record.token_requests
    assert asked["code_challenge_method"] == "S256"
    digest = hashlib.sha256(exchanged["code_verifier"].encode()).digest()
    assert asked["code_challenge"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert asked["resource"] == exchanged["resource"] == auth_server.mcp_url

    (issued,) = auth_server.record.tokens
    secrets = [issued["access_token"].encode(), issued["refresh_token"].encode()]
    for _, _, raw in events:  # no token in any event
        assert not any(s in raw for s in secrets)
    assert rig.state.engine is not None
    async with rig.state.engine.connect() as conn:
        row = (
            await conn.execute(
                select(oauth_tokens.c.token_ciphertext, oauth_tokens.c.scope).where(
                    oauth_tokens.c.user_id == rig.user
                )
            )
        ).one()
    assert not any(s in bytes(row.token_ciphertext) for s in secrets)
    assert row.scope == "tools.read"
    stored = await load_token_set(
        rig.state.engine,
        secretbox_for(rig.state.settings),
        user=rig.user,
        server_url=auth_server.mcp_url,
    )
    assert stored is not None
    assert stored.token_set["token"]["access_token"] == issued["access_token"]
    assert stored.token_set["token"]["refresh_token"] == issued["refresh_token"]
    assert stored.expires_at is not None and stored.expires_at.tzinfo is not None

    status = await rig.status(task_id)
    assert status.status_code == 200
    assert status.json()["status"] == "completed" and status.json()["source"] == "journal"
    assert status.json()["server_url"] == auth_server.mcp_url

    # The state was single use: the same redirect again is refused, nothing is published.
    again = await rig.callback(redirect)
    assert again.status_code == 400 and again.json()["error"] == "invalid_state"
    await rig.drain()
    assert len(await rig.events()) == 3
    assert len(auth_server.record.token_requests) == 1


async def test_a_wrong_state_fails_cleanly_and_spends_nothing(rig: Rig, auth_server):
    task_id = await rig.connect(auth_server.mcp_url)
    await rig.drain()
    redirect = await browse(await rig.authorization_url())

    forged = {**redirect, "state": redirect["state"][:-2] + "xx"}
    r = await rig.callback(forged)
    assert r.status_code == 400
    assert r.json() == {
        "error": "invalid_state",
        "detail": "This authorization is unknown, expired or was already used.",
    }
    page = await rig.callback(forged, accept="text/html,application/xhtml+xml")
    assert page.status_code == 400 and page.headers["content-type"].startswith("text/html")
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "unknown, expired or was already used" in page.text
    await rig.drain()
    assert await rig.types() == ["mcp.oauth.queued", "mcp.oauth.awaiting_redirect"]
    assert auth_server.record.token_requests == []  # the code was never sent anywhere
    status = (await rig.status(task_id)).json()
    assert status["status"] == "awaiting_redirect"
    assert status["authorization_url"] == await rig.authorization_url()

    # The forged attempt consumed nothing: the real redirect still completes.
    assert (await rig.callback(redirect)).status_code == 202
    await rig.drain()
    assert (await rig.types())[-1] == "mcp.oauth.completed"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({}, "invalid_state"),
        ({"code": "abc"}, "invalid_state"),
        ({"state": "s"}, "missing_code"),
        ({"state": "s" * 600, "code": "c"}, "invalid_request"),
    ],
)
async def test_malformed_callbacks_are_400_naming_the_problem(rig: Rig, query, code):
    r = await rig.callback(query)
    assert r.status_code == 400 and r.json()["error"] == code


async def test_a_denied_authorization_publishes_failed(rig: Rig):
    with AuthorizationServer(deny=True) as server:
        task_id = await rig.connect(server.mcp_url)
        await rig.drain()
        redirect = await browse(await rig.authorization_url())
        assert redirect["error"] == "access_denied"
        r = await rig.callback(redirect)
        assert r.status_code == 200 and r.json()["error"] == "access_denied"
        await rig.drain()
    events = await rig.events()
    assert events[-1][0] == "mcp.oauth.failed"
    assert events[-1][1]["code"] == "access_denied" and events[-1][1]["task_id"] == task_id
    status = (await rig.status(task_id)).json()
    assert status["status"] == "failed" and status["error"]["code"] == "access_denied"
    assert rig.state.engine is not None
    async with rig.state.engine.connect() as conn:
        rows = await conn.execute(
            select(oauth_tokens.c.id).where(oauth_tokens.c.user_id == rig.user)
        )
        assert rows.all() == []


async def test_a_redirect_from_another_issuer_is_refused(rig: Rig, auth_server):
    await rig.connect(auth_server.mcp_url)
    await rig.drain()
    redirect = await browse(await rig.authorization_url())
    await rig.callback({**redirect, "iss": "https://evil.example"})
    await rig.drain()
    (failed,) = [d for t, d, _ in await rig.events() if t == "mcp.oauth.failed"]
    assert failed["code"] == "issuer_mismatch"
    assert auth_server.record.token_requests == []  # mix-up detected before the exchange


async def test_a_pre_registered_public_client_skips_registration(rig: Rig):
    with AuthorizationServer(registration=False) as server:
        client_id = server.register_client(CALLBACK)
        await rig.connect(server.mcp_url, client_id=client_id, scope="tools.read tools.write")
        await rig.drain()
        redirect = await browse(await rig.authorization_url())
        await rig.callback(redirect)
        await rig.drain()
        (exchanged,) = server.record.token_requests
    assert server.record.registrations == []
    assert exchanged["client_id"] == client_id and "client_secret" not in exchanged
    completed = (await rig.events())[-1]
    assert completed[0] == "mcp.oauth.completed"
    assert completed[1]["scope"] == "tools.read tools.write"


@pytest.mark.parametrize(
    ("server_options", "code"),
    [
        ({"wrong_issuer": True}, "issuer_mismatch"),
        ({"registration": False}, "registration_unsupported"),
    ],
)
async def test_bad_discovery_publishes_failed(rig: Rig, server_options, code):
    with AuthorizationServer(**server_options) as server:
        task_id = await rig.connect(server.mcp_url)
        await rig.drain()
    assert await rig.types() == ["mcp.oauth.queued", "mcp.oauth.failed"]
    (failed,) = [d for t, d, _ in await rig.events() if t == "mcp.oauth.failed"]
    assert failed["code"] == code and failed["task_id"] == task_id
    assert failed["attempts"] == 1  # a wrong answer is not retried


async def test_an_unreachable_server_is_retried_then_fails(rig: Rig):
    await rig.connect(f"http://127.0.0.1:{free_port()}/mcp")
    await rig.drain()
    (failed,) = [d for t, d, _ in await rig.events() if t == "mcp.oauth.failed"]
    assert failed["code"] == "discovery_failed"
    assert failed["attempts"] == rig.state.settings.task_max_attempts


async def test_status_answers_from_the_result_record_once_the_stream_is_gone(rig: Rig, auth_server):
    task_id = await rig.connect(auth_server.mcp_url)
    await rig.drain()
    await rig.callback(await browse(await rig.authorization_url()))
    await rig.drain()
    assert rig.state.redis is not None
    await rig.state.redis.delete(Target.user(rig.user).stream_key)

    r = await rig.status(task_id)
    assert r.status_code == 200
    body = r.json()
    assert body["source"] == "record" and body["status"] == "completed"
    assert body["server_url"] == auth_server.mcp_url and body["scope"] == "tools.read"

    assert rig.state.settings.jwt_secret is not None
    other = Authenticator(rig.state.settings).issue("someone-else", (), 60)
    hidden = await rig.status(task_id, {"Authorization": f"Bearer {other}"})
    unknown = await rig.status("nope123")
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.json()["error"] == unknown.json()["error"] == "not_found"


async def test_status_finds_an_older_connection_behind_a_newer_one(rig: Rig, auth_server):
    first = await rig.connect(auth_server.mcp_url)
    second = await rig.connect(auth_server.mcp_url)
    await rig.drain()
    urls = {
        d["task_id"]: d["authorization_url"]
        for t, d, _ in await rig.events()
        if t == "mcp.oauth.awaiting_redirect"
    }
    assert set(urls) == {first, second}
    for task_id in (first, second):
        body = (await rig.status(task_id)).json()
        assert body["status"] == "awaiting_redirect" and body["source"] == "journal"
        assert body["authorization_url"] == urls[task_id]
    assert rig.state.redis is not None
    await rig.state.redis.delete(Target.user(rig.user).stream_key)
    body = (await rig.status(first)).json()
    assert body == {
        "task_id": first,
        "status": "awaiting_redirect",
        "time": body["time"],
        "source": "record",
    }


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"server_url": "http://mcp.example.com/mcp"}, 422, "invalid_server_url"),
        ({"server_url": "not a url"}, 422, "invalid_server_url"),
        ({}, 422, "invalid_body"),
        ({"server_url": "https://mcp.example.com", "scope": 'a"b'}, 422, "invalid_body"),
        ({"server_url": "https://mcp.example.com", "extra": 1}, 422, "invalid_body"),
    ],
)
async def test_bad_connect_requests_are_4xx_naming_the_problem(rig: Rig, body, status, code):
    r = await rig.http.post("/api/oauth/connect", headers=rig.headers, json=body)
    assert r.status_code == status and r.json()["error"] == code, r.text
    assert await rig.events() == []


async def test_connect_needs_a_credential(rig: Rig):
    r = await rig.http.post("/api/oauth/connect", json={"server_url": "https://x.example"})
    assert r.status_code == 401


# -- where the worker may connect (issue 11, #4) ----------------------------------------


async def test_a_loopback_server_outside_the_allow_list_is_refused_before_any_request(
    rig: Rig, auth_server
):
    rig.state.settings = rig.state.settings.model_copy(update={"oauth_allowed_networks": []})
    # At the door: a literal loopback address is refused with no task queued.
    r = await rig.http.post(
        "/api/oauth/connect", headers=rig.headers, json={"server_url": "http://127.0.0.1:6379/"}
    )
    assert r.status_code == 422 and r.json()["error"] == "invalid_server_url"
    assert "loopback" in r.json()["detail"]
    # In the worker (a task queued some other way): refused before it connects.
    payload = {"server_url": auth_server.mcp_url, "redirect_uri": CALLBACK}
    await rig.tasks.enqueue("mcp.oauth.connect", rig.user, payload, events="mcp.oauth")
    await rig.drain()
    ((_, data, _),) = [e for e in await rig.events() if e[0] == "mcp.oauth.failed"]
    assert data["code"] == "address_refused", data
    assert "loopback" in data["message"]


class ElsewhereServer(AuthorizationServer):
    """Metadata that aims the worker's registration POST at another loopback address."""

    def metadata(self, wrong_issuer: bool = False) -> dict[str, Any]:
        meta = super().metadata(wrong_issuer)
        meta["registration_endpoint"] = meta["registration_endpoint"].replace(
            "127.0.0.1", "127.0.0.2"
        )
        return meta


async def test_a_url_named_in_fetched_metadata_is_checked_too(rig: Rig):
    with ElsewhereServer() as server:
        await rig.connect(server.mcp_url)
        await rig.drain()
    ((_, data, _),) = [e for e in await rig.events() if e[0] == "mcp.oauth.failed"]
    assert data["code"] == "address_refused", data
    assert "127.0.0.2" in data["message"] and "loopback" in data["message"]


# -- the redirect URI and the browser that started (issue 11, #6) -----------------------


async def test_without_a_public_url_connect_is_503_and_the_host_header_is_never_used(
    rig: Rig, auth_server
):
    rig.state.settings = rig.state.settings.model_copy(
        update={"public_url": "", "oauth_redirect_url": ""}
    )
    r = await rig.http.post(
        "/api/oauth/connect",
        headers={**rig.headers, "Host": "attacker.example"},
        json={"server_url": auth_server.mcp_url},
    )
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "oauth_unconfigured"
    assert await rig.types() == []


async def test_the_callback_must_come_from_the_browser_that_connected(rig: Rig, auth_server):
    task_id = await rig.connect(auth_server.mcp_url)
    cookie = rig.http.cookies.get(f"herald_oauth_{task_id}")
    assert cookie, "connect sets the browser's binding cookie"
    await rig.drain()
    redirect = await browse(await rig.authorization_url())
    # Another browser (no cookie, or another one's) is refused and takes nothing.
    rig.http.cookies.clear()
    r = await rig.callback(redirect)
    assert r.status_code == 400 and r.json()["error"] == "wrong_browser"
    rig.http.cookies.set(f"herald_oauth_{task_id}", "someone-elses", domain="herald.test")
    r = await rig.callback(redirect)
    assert r.status_code == 400 and r.json()["error"] == "wrong_browser"
    # The browser that started it finishes it.
    rig.http.cookies.clear()
    rig.http.cookies.set(f"herald_oauth_{task_id}", cookie, domain="herald.test")
    r = await rig.callback(redirect)
    assert r.status_code == 202, r.text
    await rig.drain()
    assert (await rig.types())[-1] == "mcp.oauth.completed"

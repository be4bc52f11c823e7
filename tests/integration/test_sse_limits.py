"""Budgets, expiry, shutdown and tickets against a real ``herald serve``."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
import redis.asyncio as aioredis

from herald.api.tickets import stream_cookie_name
from herald.journal.base import JournalLimits
from herald.journal.positions import Target
from herald.journal.redis import RedisJournal
from tests.conftest import REDIS_URL
from tests.servers import HeraldProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[HeraldProcess]:
    """One server per configuration, shared by the module's tests (each uses its own user)."""
    env = getattr(request, "param", {})
    with HeraldProcess(tmp_path_factory.mktemp("herald"), **env) as h:
        yield h


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Opened:
    response: httpx.Response
    lines: AsyncIterator[str]

    @property
    def status_code(self) -> int:
        return self.response.status_code

    async def until_closed(self, seconds: float) -> None:
        async with asyncio.timeout(seconds):
            async for _ in self.lines:
                pass  # until the server ends the response


@asynccontextmanager
async def opened(
    http: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> AsyncIterator[Opened]:
    """An SSE response; when it is a 200, its first frame (retry:) has arrived."""
    async with http.stream("GET", path, headers=headers) as r:
        lines = r.aiter_lines()
        if r.status_code == 200:
            async with asyncio.timeout(5):
                assert (await anext(lines)).startswith("retry:")
        yield Opened(r, lines)


async def publish(user: str, count: int) -> None:
    journal = RedisJournal(aioredis.Redis.from_url(REDIS_URL), JournalLimits())
    for i in range(count):
        await journal.publish(Target.user(user), "demo.seq", {"n": i})
    await journal.aclose()


async def status_within(
    http: httpx.AsyncClient, path: str, headers: dict[str, str], want: int, seconds: float
) -> float:
    """Retry until the endpoint answers ``want``; returns when it did (monotonic)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        async with opened(http, path, headers) as r:
            if r.status_code == want:
                return time.monotonic()
    raise AssertionError(f"{path} did not answer {want} within {seconds}s")


@pytest.mark.parametrize("server", [{"HERALD_MAX_CONNECTIONS_PER_USER": "2"}], indirect=True)
async def test_connection_cap_is_429_and_a_closed_stream_frees_its_slot(
    server: HeraldProcess, unique: str
):
    headers = bearer(server.token(unique))
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        async with (
            opened(http, "/api/events", headers) as a,
            opened(http, "/api/events", headers) as b,
        ):
            assert (a.status_code, b.status_code) == (200, 200)
            third = await http.get("/api/events", headers=headers)
            assert third.status_code == 429 and third.json()["error"] == "too_many_connections"
            assert third.headers["retry-after"]
        # Both closed: the server notices the disconnects and releases the slots.
        await status_within(http, "/api/events", headers, 200, 10)


@pytest.mark.parametrize(
    "server",
    [{"HERALD_MAX_CONNECTIONS_PER_USER": "1", "HERALD_CONNECTION_LEASE_S": "8"}],
    indirect=True,
)
async def test_a_killed_process_cannot_leak_connection_slots(
    server: HeraldProcess, unique: str, tmp_path_factory: pytest.TempPathFactory
):
    # A second process with the same settings watches the slot: how long the killed
    # server takes to restart (seconds on a loaded machine) does not enter the test.
    with HeraldProcess(tmp_path_factory.mktemp("witness"), **server.extra_env) as witness:
        headers = bearer(server.token(unique))
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=10) as http,
            httpx.AsyncClient(base_url=witness.url, timeout=10) as other,
        ):
            async with opened(http, "/api/events", headers) as r:
                assert r.status_code == 200
                server.stop(signal.SIGKILL)  # no cleanup runs: the slot stays taken
                killed_at = time.monotonic()
            denied = await other.get("/api/events", headers=headers)
            assert denied.status_code == 429, "the killed stream still holds its slot"
            freed_at = await status_within(other, "/api/events", headers, 200, 20)
            assert freed_at - killed_at <= 8 + 2.5, "the lease lapses within about one lease"
    server.start()  # the module's other tests share this server


@pytest.mark.parametrize(
    "server", [{"HERALD_REPLAY_BUDGET": "2", "HERALD_REPLAY_WINDOW_S": "3"}], indirect=True
)
async def test_replay_budget(server: HeraldProcess, unique: str):
    headers = bearer(server.token(unique))
    await publish(unique, 3)
    history = "/api/events/history?limit=1&after=0-0"
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        # Connects with nothing to replay cost nothing.
        for _ in range(5):
            async with opened(http, "/api/events", headers) as r:
                assert r.status_code == 200
        first = await http.get(history, headers=headers)
        charged_at = time.monotonic()
        assert first.status_code == 200 and len(first.json()["events"]) == 1
        assert (await http.get(history, headers=headers)).status_code == 200
        denied = await http.get(history, headers=headers)
        assert denied.status_code == 429 and denied.json()["error"] == "replay_budget_exhausted"
        assert 1 <= int(denied.headers["retry-after"]) <= 3
        # Keep asking while refused: a refusal must not push the window out, so a
        # request succeeds once the first charge is older than the window.
        deadline = charged_at + 8
        while (await http.get(history, headers=headers)).status_code == 429:
            assert time.monotonic() < deadline, "still refused long after the window"
        assert time.monotonic() - charged_at < 3 + 1.5


async def test_stream_ends_when_the_token_expires(server: HeraldProcess, unique: str):
    headers = bearer(server.token(unique, ttl=2))
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        began = time.monotonic()
        async with opened(http, "/api/events", headers) as r:
            assert r.status_code == 200
            await r.until_closed(8)
        assert time.monotonic() - began < 6


async def test_sigterm_ends_open_streams_promptly(server: HeraldProcess, unique: str):
    headers = bearer(server.token(unique))
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
        opened(http, "/api/events", headers) as r,
    ):
        stopping = asyncio.get_running_loop().run_in_executor(None, server.stop)
        began = time.monotonic()
        await r.until_closed(8)  # a clean end of the response, not a dropped socket
        ended = time.monotonic() - began
        took = await stopping
    server.start()  # the server is shared by the module's other tests
    assert ended < 3, f"the open stream took {ended:.1f}s to end"
    assert took < 6, f"server took {took:.1f}s to stop with an open stream"


async def test_ticket_is_single_use_but_leaves_a_reconnect_cookie_bound_to_it(
    server: HeraldProcess, unique: str
):
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:

        async def ticket_for(user: str) -> str:
            headers = bearer(server.token(user))
            return str((await http.post("/api/events/ticket", headers=headers)).json()["ticket"])

        mine, theirs = await ticket_for(unique), await ticket_for(unique + "-other")
        cookies = {}
        for ticket in (mine, theirs):
            async with opened(http, f"/api/events?ticket={ticket}", {}) as r:
                assert r.status_code == 200
                name = stream_cookie_name(ticket)
                cookies[ticket] = (name, r.response.cookies[name])
                header = r.response.headers["set-cookie"].lower()
                assert "httponly" in header and "path=/api/events" in header
                assert "secure" not in header  # served and reached over plain HTTP
        http.cookies.clear()
        path = f"/api/events?ticket={mine}"
        spent = await http.get(path)
        assert spent.status_code == 401 and spent.json()["error"] == "bad_ticket"
        name, secret = cookies[mine]
        async with opened(http, path, {"Cookie": f"{name}={secret}"}) as again:
            assert again.status_code == 200
        # Another ticket's cookie, or a wrong secret, never opens this ticket's stream.
        other_name, other_secret = cookies[theirs]
        for cookie in (f"{other_name}={other_secret}", f"{name}={other_secret}"):
            r = await http.get(path, headers={"Cookie": cookie})
            assert r.status_code == 401, cookie


async def test_refusals_before_the_stream_starts(server: HeraldProcess, unique: str):
    user = bearer(server.token(unique))
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        cases = [
            ("/api/events", {}, 401, "missing_token"),
            ("/api/events?topic=secret", user, 403, "unknown_topic"),
            ("/api/events?last_event_id=not-a-cursor", user, 400, "bad_cursor"),
            ("/api/events/history?limit=5000", user, 400, "bad_limit"),
            ("/api/events/history?after=u~zz~1-0", user, 400, "bad_cursor"),
            ("/api/events/history?limit=%C2%B2", user, 400, "bad_limit"),  # "²" is a digit
            ("/api/events/history?after=99999999999999999999-0", user, 400, "bad_cursor"),
        ]
        for path, headers, status, code in cases:
            r = await http.get(path, headers=headers)
            assert (r.status_code, r.json()["error"]) == (status, code), path
        # The largest possible id is valid, and nothing comes after it.
        top = "18446744073709551615-18446744073709551615"
        r = await http.get(f"/api/events/history?after={top}", headers=user)
        assert r.status_code == 200 and r.json()["events"] == []
        head = await http.head("/api/events", headers=user)
        assert head.status_code == 405


@pytest.mark.parametrize("server", [{"HERALD_PUBLIC_URL": "https://127.0.0.1:8443"}], indirect=True)
async def test_the_stream_cookie_is_secure_when_browsers_reach_us_over_https(
    server: HeraldProcess, unique: str
):
    # Behind a TLS proxy the request is plain HTTP; the public URL says what browsers use.
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        minted = await http.post("/api/events/ticket", headers=bearer(server.token(unique)))
        ticket = minted.json()["ticket"]
        async with opened(http, f"/api/events?ticket={ticket}", {}) as r:
            assert r.status_code == 200
            assert "secure" in r.response.headers["set-cookie"].lower()

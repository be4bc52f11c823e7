"""A frozen Redis (SIGSTOP: alive, accepting connections, answering nothing) never
hangs Herald (issue 11, #8): every call ends within its timeout, requests get 503,
readiness answers within 1 s and open streams end so clients reconnect elsewhere.

Each test starts its own redis-server on a free loopback port and thaws it
(SIGCONT) whatever happens."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from redis.exceptions import RedisError

from herald.journal.runtime.clients import make_redis
from herald.journal.runtime.settings import Settings
from tests.servers import HeraldProcess, RedisServer
from tests.sseclient import open_sse

pytestmark = pytest.mark.integration

TIMEOUT_S = 1.0  # HERALD_REDIS_SOCKET_TIMEOUT_S in these tests
HANG_S = 20.0  # what "never answers" means here


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def frozen(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The caller freezes it; this thaws it on the way out, whatever happened."""
    try:
        yield redis_server
    finally:
        redis_server.thaw()


async def _timed(awaitable: object) -> tuple[float, object]:
    began = time.monotonic()
    try:
        async with asyncio.timeout(HANG_S):
            result: object = await awaitable  # type: ignore[misc]
    except TimeoutError:
        pytest.fail(f"no answer within {HANG_S:g} s: the call hangs on a frozen Redis")
    except Exception as e:
        result = e
    return time.monotonic() - began, result


async def test_every_client_call_ends_within_the_socket_timeout(frozen: RedisServer):
    settings = Settings.load(redis_url=frozen.url, redis_socket_timeout_s=TIMEOUT_S)
    client = make_redis(settings)
    script = client.register_script("return redis.call('GET', KEYS[1])")
    try:
        assert await client.ping()
        frozen.freeze()

        async def pipeline() -> object:
            async with client.pipeline(transaction=False) as pipe:
                pipe.get("a").get("b")
                return await pipe.execute()

        calls = {
            "ping": client.ping(),
            "set": client.set("k", "v"),
            "script": script(keys=["k"]),
            "pipeline": pipeline(),
        }
        for name, call in calls.items():
            took, result = await _timed(call)
            print(f"{name}: {type(result).__name__} after {took:.2f} s")
            assert isinstance(result, RedisError), (name, result)
            assert took < TIMEOUT_S + 1, (name, took)
        frozen.thaw()
        # The pool recovers: no connection is left with a reply owed on it.
        async with asyncio.timeout(10):
            while True:
                try:
                    assert await client.set("k", "v2")
                    break
                except RedisError:
                    continue
        assert await client.get("k") == b"v2"
    finally:
        frozen.thaw()
        await client.aclose()


@pytest.fixture
def server(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory):
    env = {
        "HERALD_REDIS_URL": redis_server.url,
        "HERALD_REDIS_SOCKET_TIMEOUT_S": str(TIMEOUT_S),
        "HERALD_KEEPALIVE_S": "2",
    }
    with HeraldProcess(tmp_path_factory.mktemp("frozen"), **env) as h:
        yield h


@pytest.fixture
async def http(server: HeraldProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=HANG_S + 10) as client:
        yield client


async def test_requests_answer_503_and_streams_end_while_redis_is_frozen(
    server: HeraldProcess, frozen: RedisServer, http: httpx.AsyncClient, unique: str
):
    token = server.token(unique)
    admin = {"Authorization": f"Bearer {server.token('ops', 'admin')}"}
    body = {"user": unique, "type": "test.frozen", "data": {}}
    async with open_sse(http, "/api/events", token) as stream:
        # The stream is live once an event published after it opened arrives.
        first = asyncio.ensure_future(stream.next_event())
        async with asyncio.timeout(10):
            while not first.done():
                r = await http.post("/api/publish", json=body, headers=admin)
                assert r.status_code == 201
                await asyncio.wait([first], timeout=0.2)
        assert first.result().json()["type"] == "test.frozen"
        frozen.freeze()
        frozen_at = time.monotonic()

        # The open stream must notice by itself: the server ends it (EOF).
        async def drained() -> float:
            async for _ in stream:
                pass
            return time.monotonic() - frozen_at

        stream_end = asyncio.ensure_future(drained())

        took, r = await _timed(http.get("/readiness"))
        print(f"/readiness while frozen: {getattr(r, 'status_code', r)} in {took:.3f} s")
        assert isinstance(r, httpx.Response) and r.status_code == 503, r
        assert r.json()["checks"]["redis"]["status"] == "fail"
        assert took < 1.0

        took, r = await _timed(http.post("/api/publish", json=body, headers=admin))
        print(
            f"publish while frozen: {getattr(r, 'status_code', r)} in {took:.3f} s "
            f"(HERALD_REDIS_SOCKET_TIMEOUT_S={TIMEOUT_S:g})"
        )
        assert isinstance(r, httpx.Response) and r.status_code == 503, r
        assert r.json()["error"] == "journal_unavailable"
        assert took < TIMEOUT_S + 1

        took, r = await _timed(
            http.get("/api/events/history", headers=admin, params={"user": unique})
        )
        print(f"history while frozen: {getattr(r, 'status_code', r)} in {took:.3f} s")
        assert isinstance(r, httpx.Response) and r.status_code == 503, r

        _, since = await _timed(stream_end)
        print(f"open stream ended {since:.2f} s after the freeze")
        # Pinged every HERALD_KEEPALIVE_S (2 s here), dead after the timeout.
        assert isinstance(since, float) and since < 2 + TIMEOUT_S + 3

    frozen.thaw()
    # Back to normal once Redis answers again.
    async with asyncio.timeout(15):
        while (await http.get("/readiness")).status_code != 200:
            pass
    assert (await http.post("/api/publish", json=body, headers=admin)).status_code == 201

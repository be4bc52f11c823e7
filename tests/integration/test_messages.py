"""Chat message streams end to end: a real ``herald serve``, real Redis and PostgreSQL,
a producer in this process, and an SSE client that drops and reconnects."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete, func, select, update

from herald.api.app import create_app
from herald.api.auth import Authenticator
from herald.api.state import open_state
from herald.journal.messages.producer import MessageStreams, connect
from herald.journal.runtime.db import make_engine
from herald.journal.runtime.settings import Settings
from herald.journal.tables import message_events, messages
from tests.conftest import DATABASE_URL, REDIS_URL
from tests.faults import proxy_database
from tests.servers import HERALD, HeraldProcess
from tests.sseclient import SseEvent, SseRefused, open_sse

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeraldProcess]:
    env = {"HERALD_MESSAGE_WATCHDOG_S": "0.3", "HERALD_WORKER_IN_PROCESS": "false"}
    with HeraldProcess(tmp_path_factory.mktemp("herald"), **env) as h:
        yield h


def _settings(database_url: str = DATABASE_URL, **overrides: object) -> Settings:
    return Settings.load(
        database_url=database_url,
        redis_url=REDIS_URL,
        journal_retry_max_s=0.3,
        producer_heartbeat_s=0.5,
        **overrides,
    )


@pytest.fixture
async def streams() -> AsyncIterator[MessageStreams]:
    async with connect(_settings()) as built:
        yield built


def _seq(event: SseEvent) -> int:
    assert event.id is not None, event
    return int(event.id)


class Reader:
    """Reads one message over SSE, dropping the connection at chosen points."""

    def __init__(self, http: httpx.AsyncClient, url: str, token: str) -> None:
        self.http, self.url, self.token = http, url, token
        self.seqs: list[int] = []
        self.types: list[str] = []
        self.changed = asyncio.Condition()

    async def read(self, count: int | None) -> bool:
        """One connection: read ``count`` events (None: to the end); True if ended."""
        last = str(self.seqs[-1]) if self.seqs else None
        async with open_sse(self.http, self.url, self.token, last_event_id=last) as stream:
            n = 0
            async for event in stream:
                self.seqs.append(_seq(event))
                self.types.append(event.json()["type"])
                async with self.changed:
                    self.changed.notify_all()
                n += 1
                if count is not None and n >= count:
                    return False
        return True

    async def until(self, n: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: len(self.seqs) >= n)


async def test_random_drops_and_reconnects_get_every_event_once_in_order(
    server: HeraldProcess, streams: MessageStreams, unique: str
):
    seed = int(os.environ.get("HERALD_TEST_SEED", random.randrange(1 << 30)))
    print(f"seed {seed} (HERALD_TEST_SEED replays it)")
    rng = random.Random(seed)
    mid, total = uuid.uuid4(), 2000
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        reader = Reader(http, f"/api/messages/{mid}/events", server.token(unique))
        opened = asyncio.Event()

        async def produce() -> None:
            async with streams.message_stream(mid, unique) as s:
                opened.set()
                lead = rng.randint(1, 300)
                for i in range(total):
                    if i % 100 == 0:
                        lead = rng.randint(1, 300)
                    # Stay a random distance ahead, so reconnects replay from the
                    # table, from the writer's not-yet-flushed tail, and live.
                    await reader.until(i - lead)
                    await s.emit("answer", {"n": i})

        producer = asyncio.create_task(produce())
        async with asyncio.timeout(90):
            await opened.wait()
            for _ in range(20):
                await reader.read(rng.randint(1, 150))
            while not await reader.read(None):
                pass
            await producer
    assert reader.seqs == list(range(total + 1))
    assert reader.types[-1] == "message.end" and set(reader.types[:-1]) == {"message.answer"}
    # After the terminal event a reconnect is told there is nothing more (204).
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        with pytest.raises(SseRefused) as refused:
            async with open_sse(http, reader.url, reader.token, last_event_id=str(total)):
                pass
        assert refused.value.status == 204


async def test_live_delivery_rides_out_a_database_outage_and_every_row_lands(
    tmp_path: Path, unique: str
):
    proxy, proxied = proxy_database(DATABASE_URL)
    mid, sent = uuid.uuid4(), 0
    try:
        with HeraldProcess(
            tmp_path, HERALD_DATABASE_URL=proxied, HERALD_WORKER_IN_PROCESS="false"
        ) as server:
            async with (
                # Room for everything emitted while the database is away.
                connect(_settings(proxied, journal_buffer_max=100_000)) as streams,
                httpx.AsyncClient(base_url=server.url, timeout=30) as http,
            ):
                reader = Reader(http, f"/api/messages/{mid}/events", server.token(unique))
                async with streams.message_stream(mid, unique) as s:
                    for _ in range(100):
                        await s.emit("answer", {"n": sent})
                        sent += 1
                    reading = asyncio.create_task(reader.read(None))
                    await reader.until(sent)
                    loop = asyncio.get_running_loop()
                    with proxy.outage():
                        # Several seconds without PostgreSQL, in lockstep with the
                        # reader: every event arrives live while nothing is stored.
                        cut_at = loop.time()
                        while loop.time() - cut_at < 3 and sent < 50_000:
                            await s.emit("answer", {"n": sent})
                            sent += 1
                            await reader.until(sent)
                        assert streams.writer.backlog > 0
                        assert streams.writer.failing
                    for _ in range(100):
                        await s.emit("answer", {"n": sent})
                        sent += 1
                async with asyncio.timeout(60):
                    assert await reading
        assert reader.seqs == list(range(sent + 1))
    finally:
        proxy.stop()
    engine = make_engine(_settings())
    try:
        async with engine.connect() as conn:
            stored = await conn.scalar(
                select(func.count()).where(message_events.c.message_id == mid)
            )
            status = await conn.scalar(select(messages.c.status).where(messages.c.id == mid))
    finally:
        await engine.dispose()
    assert stored == sent + 1 and status == "complete"


@pytest.mark.parametrize("fault", ["producer_failed", "producer_stale", "message_missing"])
async def test_the_watchdog_ends_a_stream_whose_producer_is_gone(
    server: HeraldProcess, unique: str, fault: str
):
    token = server.token(unique)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        created = await http.post("/api/messages", json={}, headers=headers)
        assert created.status_code == 201, created.text
        mid = created.json()["id"]
        appended = await http.post(
            f"/api/messages/{mid}/events", json={"type": "answer", "payload": {}}, headers=headers
        )
        assert appended.status_code == 201 and appended.json()["sequence_nos"] == [0]
        engine = make_engine(_settings())
        try:
            async with open_sse(http, f"/api/messages/{mid}/events", token) as stream:
                assert _seq(await stream.next_event()) == 0
                async with engine.begin() as conn:
                    where = messages.c.id == uuid.UUID(mid)
                    if fault == "producer_failed":
                        await conn.execute(update(messages).where(where).values(status="failed"))
                    elif fault == "producer_stale":
                        old = datetime.now(UTC) - timedelta(hours=1)
                        await conn.execute(update(messages).where(where).values(heartbeat_at=old))
                    else:
                        await conn.execute(delete(messages).where(where))
                async with asyncio.timeout(10):
                    final = await stream.next_event()
                    with pytest.raises(EOFError):
                        await stream.next_event()
        finally:
            await engine.dispose()
    assert final.id is None  # not a stored event: the cursor stays on 0
    body = final.json()
    assert body["type"] == "message.error" and body["data"]["code"] == fault


async def test_http_producer_api_and_its_errors(server: HeraldProcess, unique: str):
    token = server.token(unique)
    other = server.token(unique + "x")
    service = server.token("svc", "service")
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        made = await http.post(
            "/api/messages",
            json={"user": unique},
            headers={"Authorization": f"Bearer {service}"},
        )
        assert made.status_code == 201 and made.json()["user"] == unique
        assert made.json()["created_at"].endswith("Z")
        mid = made.json()["id"]
        base = f"/api/messages/{mid}"
        one = await http.post(
            f"{base}/events", json={"type": "answer", "payload": {"t": "a"}}, headers=auth
        )
        assert one.status_code == 201 and one.json() == {"sequence_nos": [0], "stored": True}
        batch = await http.post(
            f"{base}/events",
            json={"events": [{"type": "answer", "payload": {"t": "b"}}, {"type": "source"}]},
            headers=auth,
        )
        assert batch.json()["sequence_nos"] == [1, 2]
        # Errors are JSON 4xx naming the problem.
        cases = [
            ("POST", f"{base}/events", {"type": "Bad Type"}, auth, 422, "invalid_envelope"),
            ("POST", f"{base}/events", {"type": "end"}, auth, 422, "terminal_event"),
            ("POST", f"{base}/events", {"nope": 1}, auth, 422, "invalid_body"),
            (
                "POST",
                f"{base}/events",
                {"type": "answer"},
                {"Authorization": f"Bearer {other}"},
                404,
                "message_not_found",
            ),
            ("GET", f"{base}/events?after=x", None, auth, 400, "bad_cursor"),
            ("GET", f"{base}/events?format=xml", None, auth, 400, "bad_format"),
            ("GET", f"{base}/events?limit=5", None, auth, 400, "bad_limit"),
            ("GET", "/api/messages/not-a-uuid/events", None, auth, 404, "message_not_found"),
            ("GET", f"/api/messages/{uuid.uuid4()}/events", None, auth, 404, "message_not_found"),
            ("GET", f"{base}/events", None, {}, 401, "missing_token"),
        ]
        for method, path, body, headers, status, code in cases:
            r = await http.request(method, path, json=body, headers=headers)
            assert (r.status_code, r.json()["error"]) == (status, code), (path, body, r.text)
        done = await http.post(f"{base}/complete", headers=auth)
        assert done.status_code == 201 and done.json()["sequence_nos"] == [3]
        late = await http.post(f"{base}/events", json={"type": "answer"}, headers=auth)
        assert (late.status_code, late.json()["error"]) == (409, "message_ended")
        page = await http.get(
            f"{base}/events", params={"format": "json", "limit": "2"}, headers=auth
        )
        assert [e["id"] for e in page.json()["events"]] == ["0", "1"]
        assert page.json()["next_after"] == 1 and page.json()["ended"] is False
        rest = await http.get(
            f"{base}/events", params={"format": "json", "after": "1"}, headers=auth
        )
        events = rest.json()["events"]
        assert [(e["id"], e["type"]) for e in events] == [
            ("2", "message.source"),
            ("3", "message.end"),
        ]
        assert rest.json()["ended"] is True and rest.json()["message"]["status"] == "complete"
        # The stream replays everything and ends; a reconnect after the end is a 204.
        async with open_sse(http, f"{base}/events", token) as stream:
            seen = [e async for e in stream]
        assert [e.id for e in seen] == ["0", "1", "2", "3"]
        assert seen[0].json()["data"] == {"t": "a"} and seen[0].json()["time"].endswith("Z")
        with pytest.raises(SseRefused) as refused:
            async with open_sse(http, f"{base}/events", token, last_event_id="3"):
                pass
        assert refused.value.status == 204


async def test_demo_chat_streams_a_file_token_by_token(
    server: HeraldProcess, tmp_path: Path, unique: str
):
    text = "Herald keeps every token,\neven when the network drops.  Twice.\n"
    source = tmp_path / "answer.txt"
    source.write_text(text)
    mid = str(uuid.uuid4())
    done = await asyncio.to_thread(
        subprocess.run,
        [
            HERALD,
            "demo-chat",
            "--user",
            unique,
            str(source),
            "--message-id",
            mid,
            "--delay-ms",
            "0",
        ],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"herald tail --user {unique} --message {mid}" in done.stdout
    auth = {"Authorization": f"Bearer {server.token(unique)}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        page = await http.get(
            f"/api/messages/{mid}/events", params={"format": "json", "limit": "1000"}, headers=auth
        )
    events = page.json()["events"]
    assert "".join(e["data"]["text"] for e in events[:-1]) == text.rstrip("\n")
    assert events[-1]["type"] == "message.end" and page.json()["ended"] is True


async def test_a_message_stream_opened_while_closing_ends_at_once(
    streams: MessageStreams, unique: str
):
    """As ``tests/unit/test_events_shutdown.py`` for ``/api/events``: after the
    shutdown's ``close_streams`` a new message stream ends at once, with nothing sent."""
    settings = _settings(jwt_secret="m" * 40)
    auth = Authenticator(settings)
    mid = uuid.uuid4()
    async with streams.message_stream(mid, unique) as s, open_state(settings, auth) as state:
        await s.emit("answer", {"n": 0})
        state.close_streams()
        transport = httpx.ASGITransport(app=create_app(settings, state=state))
        headers = {"Authorization": f"Bearer {auth.issue(unique, (), 60)}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://herald") as http:
            # The in-process transport returns once the response is complete.
            async with asyncio.timeout(10):
                r = await http.get(f"/api/messages/{mid}/events", headers=headers)
    assert r.status_code == 200, r.text
    assert r.text.startswith("retry: ") and "data:" not in r.text, r.text

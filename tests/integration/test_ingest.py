"""Source ingest, connector sync and attachments against real Redis and PostgreSQL.

The task tests enqueue on a queue of their own and drain it with the real worker
runtime (``run_until_idle``), then check the rows in PostgreSQL and the lifecycle
events in the owner's stream.  The HTTP tests drive a real ``herald serve`` (with
its in-process worker) and read the events over ``GET /api/events``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
import redis.asyncio as aioredis
from httpx_sse import aconnect_sse
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from herald import migrations
from herald.journal.base import Journal
from herald.journal.envelope import decode
from herald.journal.positions import ZERO_ID, Target
from herald.journal.runtime.clients import make_journal
from herald.journal.runtime.db import make_engine
from herald.journal.runtime.settings import Settings
from herald.journal.tables import attachments, chunks, source_files, sources
from herald.journal.tasks.queue import TaskQueue
from herald.workers.chunkstore import INSERT_BATCH
from herald.workers.kinds import default_registry
from herald.workers.runtime import Worker
from tests.conftest import DATABASE_URL, REDIS_URL, redis_url_with_db
from tests.data.documents import make_pdf
from tests.servers import TEST_SECRET, HeraldProcess

pytestmark = pytest.mark.integration

CHUNK_TOKENS = 10


@pytest.fixture(scope="module")
def scratch_db() -> Iterator[str]:
    """A database of this module's own, migrated to head, dropped at the end."""
    name = f"herald_ingest_{uuid.uuid4().hex[:10]}"
    admin = DATABASE_URL.replace("+psycopg", "")
    url = make_url(DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        migrations.upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Rig:
    """A worker's clients on a private queue, and the helpers tests share."""

    settings: Settings
    engine: AsyncEngine
    journal: Journal
    tasks: TaskQueue
    redis: aioredis.Redis
    queue: str
    user: str

    async def enqueue(self, kind: str, context: dict[str, Any]) -> str:
        return await self.tasks.enqueue(
            kind, self.user, dict(context), context=dict(context), queue=self.queue
        )

    async def drain(self) -> None:
        worker = Worker(
            default_registry(),
            redis=self.redis,
            journal=self.journal,
            settings=self.settings,
            engine=self.engine,
            queue=self.tasks,
            queues=[self.queue],
        )
        await worker.run_until_idle()

    async def events(self, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        page = await self.journal.read_after(Target.user(self.user), ZERO_ID, limit=10000)
        found = [decode(e.envelope) for e in page.entries]
        return [(e.type, e.data) for e in found if e.type.startswith(prefix)]

    async def upload(self, filename: str, data: bytes, operation: str = "upload") -> str:
        """What ``POST /api/sources`` stores, then the task it queues."""
        source_id = uuid.uuid4()
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(sources).values(
                    id=source_id, user_id=self.user, name=filename, kind="upload"
                )
            )
            await conn.execute(
                insert(source_files).values(
                    source_id=source_id,
                    path=filename,
                    content_type="text/plain",
                    sha256=hashlib.sha256(data).hexdigest(),
                    size_bytes=len(data),
                    content=data,
                )
            )
        await self.enqueue("source.ingest", {"source_id": str(source_id), "operation": operation})
        return str(source_id)

    async def connector(self, directory: Path) -> str:
        source_id = uuid.uuid4()
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(sources).values(
                    id=source_id,
                    user_id=self.user,
                    name=directory.name,
                    kind="connector",
                    location=str(directory),
                )
            )
        await self.sync(str(source_id))
        return str(source_id)

    async def sync(self, source_id: str, operation: str = "connector") -> None:
        await self.enqueue("source.ingest", {"source_id": source_id, "operation": operation})

    async def source(self, source_id: str) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(sources).where(sources.c.id == source_id))).one()
        return dict(row._mapping)

    async def chunk_rows(self, source_id: str) -> list[tuple[str, int, str, int]]:
        c = chunks.c
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(c.path, c.ordinal, c.text, c.token_count)
                .where(c.source_id == source_id)
                .order_by(c.path, c.ordinal)
            )
            return [(p, o, t, n) for p, o, t, n in rows]

    async def files(self, source_id: str) -> dict[str, str]:
        f = source_files.c
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(f.path, f.sha256).where(f.source_id == source_id))
            return {p: s for p, s in rows}


@pytest.fixture
async def rig(
    scratch_db: str, real_redis: aioredis.Redis, unique: str, tmp_path: Path
) -> AsyncIterator[Rig]:
    settings = Settings.load(
        redis_url=REDIS_URL,
        database_url=scratch_db,
        jwt_secret=TEST_SECRET,
        ingest_chunk_tokens=CHUNK_TOKENS,
        connector_roots=[str(tmp_path)],
        task_backoff_s=0.01,
    )
    engine = make_engine(settings)
    journal = make_journal(settings, real_redis)
    try:
        yield Rig(
            settings,
            engine,
            journal,
            TaskQueue(real_redis, journal, settings),
            real_redis,
            f"q{unique}",
            f"u{unique}",
        )
    finally:
        await engine.dispose()


def words(n: int, prefix: str = "w") -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


async def test_an_upload_is_chunked_into_postgres_with_its_lifecycle_events(rig: Rig):
    source_id = await rig.upload("notes.txt", words(45).encode())
    await rig.drain()

    rows = await rig.chunk_rows(source_id)
    assert [(p, o, n) for p, o, _, n in rows] == [
        ("notes.txt", 0, 10),
        ("notes.txt", 1, 10),
        ("notes.txt", 2, 10),
        ("notes.txt", 3, 10),
        ("notes.txt", 4, 5),
    ]
    assert rows[0][2] == words(10) and rows[4][2] == "w40 w41 w42 w43 w44"
    source = await rig.source(source_id)
    assert (source["status"], source["chunk_count"], source["token_count"]) == ("ready", 5, 45)
    assert source["limited"] is False and source["error"] is None

    events = await rig.events("source.ingest.")
    types = [t for t, _ in events]
    assert types[0] == "source.ingest.queued" and types[-1] == "source.ingest.completed"
    assert set(types[1:-1]) <= {"source.ingest.progress"}
    done = events[-1][1]
    assert done["source_id"] == source_id and done["operation"] == "upload"
    assert (done["chunks"], done["tokens"], done["files"], done["limited"]) == (5, 45, 1, False)


async def test_a_long_source_is_truncated_and_says_limited(rig: Rig):
    rig.settings = rig.settings.model_copy(update={"ingest_max_tokens": 25})
    source_id = await rig.upload("long.md", words(100).encode())
    await rig.drain()
    rows = await rig.chunk_rows(source_id)
    assert [n for *_, n in rows] == [10, 10, 5]
    assert rows[-1][2].split()[-1] == "w24"
    source = await rig.source(source_id)
    assert (source["token_count"], source["limited"]) == (25, True)
    (_, done), *_ = await rig.events("source.ingest.completed")
    assert (done["tokens"], done["limited"]) == (25, True)


@pytest.mark.parametrize(
    ("filename", "data", "code"),
    [
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "corrupt_file"),
        ("latin1.txt", "caf\xe9 cr\xe8me".encode("latin-1"), "undecodable_text"),
        ("bad.json", b'{"unterminated": ', "corrupt_file"),
    ],
)
async def test_an_unreadable_upload_fails_once_with_a_named_code(
    rig: Rig, filename: str, data: bytes, code: str
):
    source_id = await rig.upload(filename, data)
    await rig.drain()
    events = await rig.events("source.ingest.")
    assert [t for t, _ in events] == ["source.ingest.queued", "source.ingest.failed"]
    failed = events[-1][1]
    assert failed["code"] == code and failed["source_id"] == source_id
    assert filename in failed["message"]
    source = await rig.source(source_id)
    assert source["status"] == "failed" and filename in source["error"]
    assert await rig.chunk_rows(source_id) == []


async def test_a_pdf_upload_is_ingested_page_by_page(rig: Rig):
    source_id = await rig.upload("doc.pdf", make_pdf("alpha beta gamma", "delta epsilon"))
    await rig.drain()
    rows = await rig.chunk_rows(source_id)
    assert [r[2].split() for r in rows] == [["alpha", "beta", "gamma", "delta", "epsilon"]]


async def test_reingest_replaces_the_chunks_with_the_same_content(rig: Rig):
    source_id = await rig.upload("a.txt", words(23).encode())
    await rig.drain()
    first = await rig.chunk_rows(source_id)
    await rig.sync(source_id, operation="reingest")
    await rig.drain()
    assert await rig.chunk_rows(source_id) == first
    completed = [d for t, d in await rig.events("source.ingest.completed")]
    assert [d["operation"] for d in completed] == ["upload", "reingest"]
    assert [d["chunks"] for d in completed] == [3, 3]


async def test_connector_sync_adds_changes_and_removes_files(rig: Rig, tmp_path: Path):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text(words(12, "a"))
    (docs / "b.md").write_text(words(5, "b"))
    (docs / "sub" / "c.csv").write_text("x,y\n1,2\n")
    (docs / "tool.exe").write_bytes(b"MZ\x00\x01")
    (docs / ".hidden.txt").write_text("secret words")
    source_id = await rig.connector(docs)
    await rig.drain()

    first = await rig.files(source_id)
    assert sorted(first) == ["a.txt", "b.md", "sub/c.csv"]
    (_, done), *_ = await rig.events("source.ingest.completed")
    assert done["operation"] == "connector"
    assert (done["added"], done["changed"], done["removed"], done["skipped"]) == (3, 0, 0, 1)
    assert (done["files"], done["chunks"], done["tokens"]) == (3, 4, 21)
    unchanged_before = [r for r in await rig.chunk_rows(source_id) if r[0] == "sub/c.csv"]

    (docs / "a.txt").write_text(words(3, "new"))
    (docs / "b.md").unlink()
    (docs / "d.json").write_text('{"k": "json words here"}')
    await rig.sync(source_id)
    await rig.drain()

    second = await rig.files(source_id)
    assert sorted(second) == ["a.txt", "d.json", "sub/c.csv"]
    assert second["a.txt"] != first["a.txt"] and second["sub/c.csv"] == first["sub/c.csv"]
    rows = await rig.chunk_rows(source_id)
    assert [(p, t) for p, _, t, _ in rows] == [
        ("a.txt", "new0 new1 new2"),
        ("d.json", "json words here"),
        ("sub/c.csv", "x y\n1 2"),
    ]
    assert [r for r in rows if r[0] == "sub/c.csv"] == unchanged_before
    done = [d for _, d in await rig.events("source.ingest.completed")][-1]
    assert (done["added"], done["changed"], done["removed"], done["skipped"]) == (1, 1, 1, 1)
    assert (done["files"], done["chunks"], done["tokens"]) == (3, 3, 10)
    source = await rig.source(source_id)
    assert (source["status"], source["chunk_count"], source["token_count"]) == ("ready", 3, 10)


async def test_a_sync_with_nothing_changed_rewrites_nothing(rig: Rig, tmp_path: Path):
    docs = tmp_path / "same"
    docs.mkdir()
    (docs / "a.txt").write_text(words(4))
    source_id = await rig.connector(docs)
    await rig.drain()
    await rig.sync(source_id)
    await rig.drain()
    done = [d for _, d in await rig.events("source.ingest.completed")][-1]
    assert (done["added"], done["changed"], done["removed"], done["chunks"]) == (0, 0, 0, 1)
    progress = [d for t, d in await rig.events("source.ingest.progress")]
    assert all(d["total"] == 1 for d in progress)  # only the first sync had work


async def test_an_unreadable_connector_file_is_counted_and_the_rest_ingested(
    rig: Rig, tmp_path: Path
):
    docs = tmp_path / "mixed"
    docs.mkdir()
    (docs / "good.txt").write_text("fine words")
    (docs / "bad.pdf").write_bytes(b"%PDF-1.4 garbage")
    (docs / "big.txt").write_text("x " * 50)
    # A Latin-1 file name: not UTF-8, so it can be neither stored nor published as is.
    (docs / os.fsdecode(b"caf\xe9.txt")).write_text("words")
    rig.settings = rig.settings.model_copy(update={"ingest_max_upload_bytes": 64})
    source_id = await rig.connector(docs)
    await rig.drain()
    (_, done), *_ = await rig.events("source.ingest.completed")
    assert (done["added"], done["unreadable"], done["files"]) == (1, 3, 1)
    assert sorted((e["path"], e["error"]) for e in done["errors"]) == [
        ("bad.pdf", "corrupt_file"),
        ("big.txt", "file_too_large"),
        ("caf\ufffd.txt", "undecodable_name"),
    ]
    assert await rig.files(source_id) == {"good.txt": hashlib.sha256(b"fine words").hexdigest()}


async def test_links_count_only_when_they_point_inside_the_directory(rig: Rig, tmp_path: Path):
    (tmp_path / "outside.txt").write_text("words from elsewhere")
    docs = tmp_path / "linked"
    docs.mkdir()
    (docs / "real.txt").write_text("real words")
    (docs / "inside.txt").symlink_to(docs / "real.txt")
    (docs / "escape.txt").symlink_to(tmp_path / "outside.txt")
    (docs / "dangling.txt").symlink_to(tmp_path / "missing.txt")
    (docs / "again").symlink_to(docs)  # a directory link is not followed
    source_id = await rig.connector(docs)
    await rig.drain()
    assert sorted(await rig.files(source_id)) == ["inside.txt", "real.txt"]
    assert {t for _, _, t, _ in await rig.chunk_rows(source_id)} == {"real words"}


async def test_a_connector_outside_the_roots_fails_without_reading_it(rig: Rig, tmp_path: Path):
    rig.settings = rig.settings.model_copy(update={"connector_roots": [str(tmp_path / "only")]})
    docs = tmp_path / "elsewhere"
    docs.mkdir()
    (docs / "a.txt").write_text("words")
    source_id = await rig.connector(docs)
    await rig.drain()
    (_, failed), *_ = await rig.events("source.ingest.failed")
    assert failed["code"] == "connector_path_forbidden"
    assert (await rig.source(source_id))["status"] == "failed"
    assert await rig.files(source_id) == {}


async def _attach(rig: Rig, filename: str, data: bytes) -> str:
    attachment_id = uuid.uuid4()
    async with rig.engine.begin() as conn:
        await conn.execute(
            insert(attachments).values(
                id=attachment_id,
                user_id=rig.user,
                filename=filename,
                content_type="text/html",
                size_bytes=len(data),
                content=data,
            )
        )
    await rig.enqueue("attachment", {"attachment_id": str(attachment_id)})
    return str(attachment_id)


async def test_an_attachment_is_extracted_with_attachment_events(rig: Rig):
    attachment_id = await _attach(rig, "page.html", b"<p>Hello <script>x()</script>there</p>")
    await rig.drain()
    async with rig.engine.connect() as conn:
        row = (
            await conn.execute(select(attachments).where(attachments.c.id == attachment_id))
        ).one()
    assert (row.status, row.text, row.token_count) == ("ready", "Hello there", 2)
    events = await rig.events("attachment.")
    assert events[0][0] == "attachment.queued" and events[-1][0] == "attachment.completed"
    done = events[-1][1]
    assert done["attachment_id"] == attachment_id
    assert (done["tokens"], done["limited"]) == (2, False)


async def test_a_corrupt_attachment_fails_and_says_why(rig: Rig):
    attachment_id = await _attach(rig, "scan.pdf", b"definitely not a pdf")
    await rig.drain()
    events = await rig.events("attachment.")
    assert [t for t, _ in events] == ["attachment.queued", "attachment.failed"]
    assert events[-1][1]["code"] == "corrupt_file"
    async with rig.engine.connect() as conn:
        row = (
            await conn.execute(select(attachments).where(attachments.c.id == attachment_id))
        ).one()
    assert row.status == "failed" and row.error == "scan.pdf is not a readable PDF"


# -- over HTTP, against a real `herald serve` and its in-process worker ----------------


@dataclass
class Server:
    proc: HeraldProcess
    roots: Path


@dataclass
class Caller:
    user: str
    headers: dict[str, str]


MAX_UPLOAD = 100_000
# The API queues on the shared `default` queue, which every worker on a Redis reads:
# the server gets a Redis database of its own, so no other server's worker (they
# use the test URL's database) can take its tasks and run them against another
# PostgreSQL.  User ids stay unique, since pub/sub channels span databases.
SERVER_REDIS_URL = redis_url_with_db(REDIS_URL, 13)


@pytest.fixture(scope="module")
def server(scratch_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    roots = tmp_path_factory.mktemp("connector_roots")
    proc = HeraldProcess(
        tmp_path_factory.mktemp("serve"),
        HERALD_REDIS_URL=SERVER_REDIS_URL,
        HERALD_DATABASE_URL=scratch_db,
        HERALD_WORKER_IN_PROCESS="true",
        HERALD_INGEST_CHUNK_TOKENS=str(CHUNK_TOKENS),
        HERALD_INGEST_MAX_UPLOAD_BYTES=str(MAX_UPLOAD),
        HERALD_CONNECTOR_ROOTS=orjson.dumps([str(roots)]).decode(),
    )
    with proc:
        yield Server(proc, roots)


@pytest.fixture
def caller(server: Server, unique: str) -> Caller:
    user = f"u{unique}"
    return Caller(user, {"Authorization": f"Bearer {server.proc.token(user)}"})


@pytest.fixture
async def client(server: Server, caller: Caller) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=server.proc.url, headers=caller.headers, timeout=30
    ) as http:
        yield http


async def events_until(
    http: httpx.AsyncClient, done: Callable[[str, dict[str, Any]], bool]
) -> list[tuple[str, dict[str, Any]]]:
    """The caller's events from the start of its stream (so nothing published before
    the connection is missed) up to the first one ``done`` accepts."""
    seen: list[tuple[str, dict[str, Any]]] = []
    async with asyncio.timeout(60):
        async with aconnect_sse(
            http, "GET", "/api/events", headers={"Last-Event-ID": "0-0"}
        ) as source:
            assert source.response.status_code == 200
            async for sse in source.aiter_sse():
                if not sse.data:
                    continue
                envelope = orjson.loads(sse.data)
                seen.append((envelope["type"], envelope["data"]))
                if done(envelope["type"], envelope["data"]):
                    return seen
    raise AssertionError(f"the stream ended before the awaited event: {seen}")


def finished(prefix: str, key: str, value: str) -> Callable[[str, dict[str, Any]], bool]:
    def check(type_: str, data: dict[str, Any]) -> bool:
        return type_ in (f"{prefix}.completed", f"{prefix}.failed") and data.get(key) == value

    return check


async def test_upload_over_http_streams_queued_then_rising_progress_then_completed(
    client: httpx.AsyncClient,
):
    # 5,000 words in chunks of 10: 500 chunks, stored in batches of 200 with progress
    # after each (the runtime may drop the middle one: at most 10 progress events/s).
    body = words(5000).encode()
    assert len(body) < MAX_UPLOAD
    posted = await client.post(
        "/api/sources", files={"file": ("book.txt", body, "text/plain")}, data={"name": "Book"}
    )
    assert posted.status_code == 202, posted.text
    accepted = posted.json()
    source_id, task_id = accepted["source_id"], accepted["task_id"]
    assert posted.headers["location"] == f"/api/sources/{source_id}"

    seen = await events_until(client, finished("source.ingest", "source_id", source_id))
    mine = [(t, d) for t, d in seen if d.get("source_id") == source_id]
    types = [t for t, _ in mine]
    assert types[0] == "source.ingest.queued"
    assert types[-1] == "source.ingest.completed", mine[-1]
    progress = [d["current"] for t, d in mine if t == "source.ingest.progress"]
    assert progress == sorted(set(progress)), progress  # strictly increasing
    batches = {*range(INSERT_BATCH, 500, INSERT_BATCH), 500}
    assert progress[0] == min(batches) and progress[-1] == 500 and set(progress) <= batches
    assert all(d["total"] == 500 for t, d in mine[1:-1])
    done = mine[-1][1]
    assert done["task_id"] == task_id and done["operation"] == "upload"
    assert (done["chunks"], done["tokens"], done["files"], done["limited"]) == (500, 5000, 1, False)

    got = await client.get(f"/api/sources/{source_id}")
    assert got.status_code == 200
    source = got.json()
    assert (source["name"], source["kind"], source["status"]) == ("Book", "upload", "ready")
    assert (source["chunk_count"], source["token_count"], source["file_count"]) == (500, 5000, 1)
    assert source["files"][0]["path"] == "book.txt"
    assert source["files"][0]["sha256"] == hashlib.sha256(body).hexdigest()
    assert source["created_at"].endswith("Z") and source["updated_at"].endswith("Z")

    again = await client.post(f"/api/sources/{source_id}/reingest")
    assert again.status_code == 202
    task_id = again.json()["task_id"]
    seen = await events_until(client, finished("source.ingest", "task_id", task_id))
    assert seen[-1][0] == "source.ingest.completed"
    assert (seen[-1][1]["operation"], seen[-1][1]["chunks"]) == ("reingest", 500)


async def test_a_corrupt_upload_over_http_ends_in_a_failed_event(client: httpx.AsyncClient):
    posted = await client.post(
        "/api/sources", files={"file": ("scan.pdf", b"%PDF-1.4 nope", "application/pdf")}
    )
    assert posted.status_code == 202
    source_id = posted.json()["source_id"]
    seen = await events_until(client, finished("source.ingest", "source_id", source_id))
    assert seen[-1][0] == "source.ingest.failed"
    assert seen[-1][1]["code"] == "corrupt_file"
    source = (await client.get(f"/api/sources/{source_id}")).json()
    assert (source["status"], source["error"]) == ("failed", "scan.pdf is not a readable PDF")


@pytest.mark.parametrize(
    ("files", "status", "code"),
    [
        ({"file": ("big.txt", b"x" * (MAX_UPLOAD + 1), "text/plain")}, 413, "file_too_large"),
        ({"file": ("tool.exe", b"MZ", "application/octet-stream")}, 415, "unsupported_file_type"),
        ({"file": ("noext", b"words", "text/plain")}, 415, "unsupported_file_type"),
        ({"file": ("empty.txt", b"", "text/plain")}, 422, "empty_file"),
        ({"other": ("a.txt", b"words", "text/plain")}, 422, "missing_file"),
    ],
    ids=["too-large", "exe", "no-extension", "empty", "wrong-field"],
)
async def test_bad_uploads_are_refused_with_a_named_json_error(
    client: httpx.AsyncClient, files: dict[str, Any], status: int, code: str
):
    for route in ("/api/sources", "/api/attachments"):
        r = await client.post(route, files=files)
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.json()["error"] == code and r.json()["detail"]


async def test_requests_that_are_not_uploads_are_refused(client: httpx.AsyncClient):
    r = await client.post("/api/sources", content=b"words", headers={"content-type": "text/plain"})
    assert (r.status_code, r.json()["error"]) == (415, "unsupported_media_type")
    r = await client.post(
        "/api/sources", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data"}
    )
    assert (r.status_code, r.json()["error"]) == (422, "invalid_multipart")
    # NUL is refused at the door, as in every JSON body (PostgreSQL cannot store it).
    r = await client.post("/api/sources", json={"connector": {"path": "/tmp/a\x00b"}})
    assert (r.status_code, r.json()["error"]) == (422, "invalid_character")
    r = await client.post("/api/sources", json={"connector": {"path": 42}})
    assert (r.status_code, r.json()["error"]) == (422, "invalid_body")
    r = await client.post(
        "/api/sources", content=b"{", headers={"content-type": "application/json"}
    )
    assert (r.status_code, r.json()["error"]) == (422, "invalid_json")
    r = await client.post(
        "/api/sources", files={"file": ("a.txt", b"x")}, headers={"Authorization": ""}
    )
    assert r.status_code == 401


async def test_control_characters_in_names_are_dropped(client: httpx.AsyncClient):
    # Written by hand: HTTP clients percent-encode these, but nothing obliges one to.
    body = (
        b"--B\r\n"
        b'Content-Disposition: form-data; name="file"; filename="dir\\we\x00ird\x07.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\ntext\r\n"
        b'--B\r\nContent-Disposition: form-data; name="name"\r\n\r\na\x00name\r\n--B--\r\n'
    )
    posted = await client.post(
        "/api/sources", content=body, headers={"content-type": "multipart/form-data; boundary=B"}
    )
    assert posted.status_code == 202, posted.text
    source = (await client.get(f"/api/sources/{posted.json()['source_id']}")).json()
    assert (source["name"], source["files"][0]["path"]) == ("aname", "weird.txt")


async def test_another_users_source_is_as_unknown_as_a_missing_one(
    client: httpx.AsyncClient, server: Server, unique: str
):
    posted = await client.post("/api/sources", files={"file": ("a.txt", b"mine", "text/plain")})
    source_id = posted.json()["source_id"]
    other = {"Authorization": f"Bearer {server.proc.token(f'other{unique}')}"}
    for path in (
        f"/api/sources/{source_id}",
        f"/api/sources/{uuid.uuid4()}",
        "/api/sources/not-a-uuid",
    ):
        r = await client.get(path, headers=other)
        assert (r.status_code, r.json()["error"]) == (404, "source_not_found"), path
    r = await client.post(f"/api/sources/{source_id}/reingest", headers=other)
    assert (r.status_code, r.json()["error"]) == (404, "source_not_found")
    r = await client.post(f"/api/sources/{source_id}/sync")
    assert (r.status_code, r.json()["error"]) == (409, "not_a_connector")


async def test_a_connector_over_http_syncs_new_files(client: httpx.AsyncClient, server: Server):
    docs = server.roots / uuid.uuid4().hex
    docs.mkdir()
    (docs / "one.md").write_text(words(15))
    posted = await client.post("/api/sources", json={"connector": {"path": str(docs)}})
    assert posted.status_code == 202, posted.text
    source_id = posted.json()["source_id"]
    seen = await events_until(client, finished("source.ingest", "source_id", source_id))
    assert seen[-1][0] == "source.ingest.completed", seen[-1]
    assert (seen[-1][1]["operation"], seen[-1][1]["added"], seen[-1][1]["chunks"]) == (
        "connector",
        1,
        2,
    )

    (docs / "two.html").write_text("<p>two words</p>")
    synced = await client.post(f"/api/sources/{source_id}/sync")
    assert synced.status_code == 202
    task_id = synced.json()["task_id"]
    seen = await events_until(client, finished("source.ingest", "task_id", task_id))
    assert (seen[-1][1]["added"], seen[-1][1]["files"], seen[-1][1]["chunks"]) == (1, 2, 3)
    source = (await client.get(f"/api/sources/{source_id}")).json()
    assert (source["kind"], source["location"], source["status"]) == (
        "connector",
        str(docs),
        "ready",
    )
    assert [f["path"] for f in source["files"]] == ["one.md", "two.html"]


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/etc", 403, "connector_path_forbidden"),
        ("relative/dir", 422, "invalid_connector_path"),
        ("{roots}/missing", 422, "connector_path_not_directory"),
        ("{roots}/../..", 403, "connector_path_forbidden"),
    ],
)
async def test_a_connector_path_must_be_a_directory_inside_the_roots(
    client: httpx.AsyncClient, server: Server, path: str, status: int, code: str
):
    r = await client.post(
        "/api/sources", json={"connector": {"path": path.format(roots=server.roots)}}
    )
    assert (r.status_code, r.json()["error"]) == (status, code), r.text


async def test_an_attachment_over_http_is_extracted(client: httpx.AsyncClient):
    posted = await client.post(
        "/api/attachments",
        files={"file": ("note.csv", b"name,qty\napples,3\n", "text/csv")},
    )
    assert posted.status_code == 202, posted.text
    attachment_id = posted.json()["attachment_id"]
    seen = await events_until(client, finished("attachment", "attachment_id", attachment_id))
    assert seen[0][0] == "attachment.queued" and seen[-1][0] == "attachment.completed"
    got = await client.get(f"/api/attachments/{attachment_id}")
    assert got.status_code == 200
    body = got.json()
    assert (body["status"], body["text"], body["token_count"]) == ("ready", "name qty\napples 3", 4)
    assert (body["filename"], body["content_type"]) == ("note.csv", "text/csv")
    r = await client.get(f"/api/attachments/{uuid.uuid4()}")
    assert (r.status_code, r.json()["error"]) == (404, "attachment_not_found")


async def test_a_task_cannot_ingest_a_source_its_owner_does_not_own(rig: Rig):
    source_id = await rig.upload("mine.txt", words(12).encode())
    await rig.drain()
    before = await rig.source(source_id)
    # A service token may enqueue for any user: here for mallory, naming rig's source.
    mallory = f"m{rig.user}"
    context = {"source_id": source_id, "operation": "reingest"}
    await rig.tasks.enqueue("source.ingest", mallory, context, context=context, queue=rig.queue)
    await rig.drain()
    after = await rig.source(source_id)
    assert (after["status"], after["updated_at"]) == (before["status"], before["updated_at"])
    page = await rig.journal.read_after(Target.user(mallory), ZERO_ID, limit=100)
    failed = [decode(e.envelope) for e in page.entries if e.type == "source.ingest.failed"]
    assert len(failed) == 1 and failed[0].data["code"] == "source_not_found"

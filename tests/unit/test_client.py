"""The public Python API, ``from herald import connect``, over fakeredis: what it
publishes and enqueues, how it refuses misuse, and that importing it is free."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import fakeredis
import orjson
import pytest

import herald
from herald import (
    Herald,
    MessagesUnavailable,
    NotConnected,
    NotRunning,
    Target,
    connect,
    event,
)
from herald.journal.base import JournalLimits
from herald.journal.positions import ZERO_ID
from herald.journal.redis import RedisJournal
from herald.journal.runtime.discovery import Runtime, write_runtime
from herald.journal.runtime.settings import Settings
from herald.journal.tasks.entries import InvalidTask
from herald.journal.tasks.keys import tasks_key

SETTINGS_ENV = ("HERALD_REDIS_URL", "HERALD_DATABASE_URL", "HERALD_DATA_DIR", "HERALD_PUBLIC_URL")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
async def fake() -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    client = fakeredis.FakeAsyncRedis()
    yield client
    await client.aclose()


@pytest.fixture
async def opened(fake: fakeredis.FakeAsyncRedis) -> AsyncIterator[Herald]:
    settings = Settings(redis_url="redis://fake", database_url="")
    async with Herald(settings, redis=fake) as client:
        yield client


def test_every_public_name_resolves():
    for name in herald.__all__:
        assert getattr(herald, name) is not None, name
    with pytest.raises(AttributeError):
        herald.no_such_name  # noqa: B018


def test_importing_herald_loads_no_client_library():
    code = (
        "import sys, herald; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('redis', 'sqlalchemy', 'psycopg', 'starlette', 'herald')))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "['herald']"


def test_connect_without_a_server_says_so(clean_env: Path):
    with pytest.raises(NotRunning) as e:
        connect()
    assert str(clean_env / ".herald" / "runtime.json") in str(e.value)


def test_connect_finds_the_running_server(clean_env: Path):
    running = Runtime(
        "http://127.0.0.1:8123", "redis://127.0.0.1:1/0", "postgresql+psycopg://h/db", os.getpid()
    )
    (clean_env / ".herald").mkdir()
    write_runtime(clean_env / ".herald", running)
    found = connect()
    assert found.settings.redis_url == running.redis_url
    assert found.settings.database_url == "postgresql+psycopg://h/db"
    other = connect(data_dir=clean_env / "elsewhere", redis_url="redis://127.0.0.1:2/0")
    assert other.settings.redis_url == "redis://127.0.0.1:2/0"
    assert other.settings.database_url == ""  # publishing works; message streams will refuse


def test_connect_refuses_an_in_process_journal(clean_env: Path):
    with pytest.raises(ValueError, match="memory://"):
        connect(redis_url="memory://", database_url="postgresql://h/db")


async def test_publish_goes_to_a_user_or_a_topic(opened: Herald, fake):
    to_user = await opened.publish("demo.hello", {"n": 1}, user="alice")
    to_topic = await opened.publish("printer.status", {"online": True}, topic="printers")
    assert (str(to_user.target), str(to_topic.target)) == ("user:alice", "topic:printers")
    ((entry_id, fields),) = await fake.xrange(Target.user("alice").stream_key)
    envelope = orjson.loads(fields[b"e"])
    assert envelope["id"] == entry_id.decode() == str(to_user.id)
    assert envelope["type"] == "demo.hello" and envelope["data"] == {"n": 1}


async def test_publish_with_an_idempotency_key_publishes_once(opened: Herald):
    first = await opened.publish("demo.once", {}, user="alice", idempotency_key="k1")
    again = await opened.publish("demo.once", {}, user="alice", idempotency_key="k1")
    assert again.duplicate and again.id == first.id


async def test_publish_many_keeps_the_order_given(opened: Herald, fake):
    results = await opened.publish_many(
        [
            event("demo.seq", {"n": 1}, user="alice"),
            event("demo.seq", {"n": 2}, topic="printers"),
            event("demo.seq", {"n": 3}, user="alice"),
        ]
    )
    assert [str(r.target) for r in results] == ["user:alice", "topic:printers", "user:alice"]
    page = await RedisJournal(fake, JournalLimits()).read_after(
        Target.user("alice"), ZERO_ID, limit=10
    )
    assert [orjson.loads(e.envelope)["data"]["n"] for e in page.entries] == [1, 3]


@pytest.mark.parametrize("where", [{}, {"user": "a", "topic": "b"}])
async def test_publish_needs_exactly_one_destination(opened: Herald, where):
    with pytest.raises(ValueError, match="exactly one"):
        await opened.publish("demo.x", {}, **where)


async def test_enqueue_queues_the_task_and_tells_its_owner(opened: Herald, fake):
    task_id = await opened.enqueue("image.resize", "alice", {"pages": 2}, context={"image": "i7"})
    ((_, fields),) = await fake.xrange(tasks_key("default"))
    assert fields[b"id"].decode() == task_id and fields[b"kind"] == b"image.resize"
    ((_, queued),) = await fake.xrange(Target.user("alice").stream_key)
    envelope = orjson.loads(queued[b"e"])
    assert envelope["type"] == "image.resize.queued"
    assert envelope["data"] == {"task_id": task_id, "image": "i7"}
    status = await opened.task_status(task_id)
    assert status is not None and status["status"] == "queued" and status["user"] == "alice"


async def test_enqueue_refuses_a_bad_kind_before_touching_redis(opened: Herald, fake):
    with pytest.raises(InvalidTask):
        await opened.enqueue("NotAKind", "alice")
    assert await fake.keys("*") == []


async def test_message_streams_need_a_database(opened: Herald):
    with pytest.raises(MessagesUnavailable, match="HERALD_DATABASE_URL"):
        opened.message_stream("0b6f2b1e-5bd4-4d3f-9c1c-5c2b1d1a2b3c", "alice")


async def test_using_it_outside_async_with_is_refused(fake):
    client = Herald(Settings(redis_url="redis://fake", database_url=""), redis=fake)
    with pytest.raises(NotConnected):
        await client.publish("demo.x", {}, user="alice")
    async with client:
        await client.publish("demo.x", {}, user="alice")
    with pytest.raises(NotConnected):
        await client.enqueue("demo.x", "alice")
    assert await fake.ping()  # a client passed in stays open: it is the caller's

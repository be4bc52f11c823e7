"""The batched writer and the producer API against real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from herald.journal.messages.producer import MessageStreams, connect
from herald.journal.messages.store import (
    cleanup_message_events,
    create_message,
    get_message,
    read_events,
)
from herald.journal.messages.writer import MessageWriter, Row, WriterOverloaded
from herald.journal.runtime.db import make_engine
from herald.journal.runtime.metrics import WRITER_FAILURES, WRITER_OVERLOADED
from herald.journal.runtime.settings import Settings
from herald.journal.tables import message_events, messages
from tests.conftest import DATABASE_URL, REDIS_URL
from tests.faults import TcpProxy, proxy_database

pytestmark = pytest.mark.integration


def _settings(**overrides: object) -> Settings:
    return Settings.load(
        database_url=DATABASE_URL, redis_url=REDIS_URL, producer_heartbeat_s=0.2, **overrides
    )


async def _count(engine: AsyncEngine, message_id: uuid.UUID) -> int:
    async with engine.connect() as conn:
        n = await conn.scalar(select(func.count()).where(message_events.c.message_id == message_id))
    return int(n or 0)


async def _until(condition: object, timeout_s: float = 10.0) -> None:
    """Ask the database until ``condition()`` holds, failing after a deadline."""
    async with asyncio.timeout(timeout_s):
        while not await condition():  # type: ignore[operator]
            pass


def _row(message_id: uuid.UUID, seq: int, event_type: str = "answer", **payload: object) -> Row:
    return Row(message_id, seq, event_type, orjson.dumps(payload).decode(), datetime.now(UTC))


@pytest.fixture
async def message(engine: AsyncEngine) -> uuid.UUID:
    mid = uuid.uuid4()
    await create_message(engine, mid, "writer-test")
    return mid


async def test_the_timer_flushes_without_another_event(engine: AsyncEngine, message: uuid.UUID):
    writer = MessageWriter(engine, batch=1000, flush_ms=200)
    writer.start()
    try:
        writer.reserve()
        loop = asyncio.get_running_loop()
        added = loop.time()
        mark = writer.add([_row(message, 0)])
        assert writer.backlog == 1
        # Nothing else arrives and nobody asks for a flush: the timer must do it.
        assert await writer.wait_durable(mark, 5, urge=False)
        assert loop.time() - added >= 0.19
        assert await _count(engine, message) == 1
        assert writer.backlog == 0
    finally:
        await writer.aclose()


async def test_size_flushes_before_the_timer(engine: AsyncEngine, message: uuid.UUID):
    writer = MessageWriter(engine, batch=4, flush_ms=60_000)
    writer.start()
    try:
        writer.reserve(4)
        assert await writer.wait_durable(
            writer.add([_row(message, i) for i in range(4)]), 5, urge=False
        )
        assert await _count(engine, message) == 4
    finally:
        await writer.aclose()


async def test_identical_resend_is_a_no_op_and_a_collision_takes_the_next_number(
    engine: AsyncEngine, message: uuid.UUID
):
    renumbered: list[tuple[int, int]] = []

    async def note(row: Row, seq: int) -> None:
        renumbered.append((row.seq, seq))

    writer = MessageWriter(engine, batch=1, flush_ms=10, on_renumbered=note)
    writer.start()
    try:
        first = [_row(message, 0, text="a"), _row(message, 1, text="b")]
        writer.reserve(2)
        assert await writer.wait_durable(writer.add(first), 10)
        # The same rows again (a retried flush, a re-sent batch): nothing changes.
        writer.reserve(2)
        assert await writer.wait_durable(writer.add(first), 10)
        assert await _count(engine, message) == 2
        # A different event under a taken number is stored under the next free one.
        writer.reserve()
        assert await writer.wait_durable(writer.add([_row(message, 1, text="other")]), 10)
        rows = await read_events(engine, message, -1, 10)
        assert [(r.seq, orjson.loads(r.payload_json)) for r in rows] == [
            (0, {"text": "a"}),
            (1, {"text": "b"}),
            (2, {"text": "other"}),
        ]
        assert renumbered == [(1, 2)]
    finally:
        await writer.aclose()


async def test_rows_of_a_deleted_message_do_not_block_the_others(
    engine: AsyncEngine, message: uuid.UUID
):
    gone = uuid.uuid4()
    await create_message(engine, gone, "writer-test")
    async with engine.begin() as conn:
        await conn.execute(messages.delete().where(messages.c.id == gone))
    failures = WRITER_FAILURES._value.get()
    writer = MessageWriter(engine, batch=100, flush_ms=10)
    writer.start()
    try:
        writer.reserve(2)
        assert await writer.wait_durable(writer.add([_row(gone, 0), _row(message, 0)]), 10)
        assert await _count(engine, message) == 1
        assert WRITER_FAILURES._value.get() == failures + 1  # counted, not silent
    finally:
        await writer.aclose()


@pytest.fixture
async def proxied() -> AsyncIterator[tuple[TcpProxy, AsyncEngine]]:
    proxy, url = proxy_database(DATABASE_URL)
    engine = make_engine(_settings(), url)
    yield proxy, engine
    await engine.dispose()
    proxy.stop()


async def test_a_failing_database_is_retried_and_the_buffer_is_bounded(
    proxied: tuple[TcpProxy, AsyncEngine], engine: AsyncEngine, message: uuid.UUID
):
    proxy, through_proxy = proxied
    writer = MessageWriter(through_proxy, batch=1, flush_ms=10, buffer_max=5, retry_max_s=0.2)
    writer.start()
    failures = WRITER_FAILURES._value.get()
    overloaded = WRITER_OVERLOADED._value.get()
    try:
        with proxy.outage():
            writer.reserve(5)
            mark = writer.add([_row(message, i) for i in range(5)])
            assert not await writer.wait_durable(mark, 0.5)
            assert WRITER_FAILURES._value.get() > failures  # it tried, failed, reported
            with pytest.raises(WriterOverloaded):
                writer.reserve()
            assert WRITER_OVERLOADED._value.get() == overloaded + 1
            assert writer.backlog == 5  # nothing dropped
        assert await writer.wait_durable(mark, 15)
        assert await _count(engine, message) == 5
        writer.reserve()  # room again
        writer.release()
    finally:
        await writer.aclose()


@pytest.fixture
async def streams() -> AsyncIterator[MessageStreams]:
    async with connect(_settings()) as built:
        yield built


async def test_closing_ends_the_message_on_every_exit_path(streams: MessageStreams):
    normal, failing, cancelled = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with streams.message_stream(normal, "closer") as s:
        await s.emit("answer", {"text": "hi"})
    with pytest.raises(RuntimeError):
        async with streams.message_stream(failing, "closer") as s:
            await s.emit("answer", {"text": "hi"})
            raise RuntimeError("model crashed")

    started = asyncio.Event()

    async def produce() -> None:
        async with streams.message_stream(cancelled, "closer") as s:
            await s.emit("answer", {"text": "hi"})
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(produce())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    expected = {
        normal: ("complete", "end", {}),
        failing: ("failed", "error", {"code": "producer_error", "message": "the answer failed"}),
        cancelled: (
            "failed",
            "error",
            {"code": "producer_cancelled", "message": "the answer was cancelled"},
        ),
    }
    for mid, (status, last_type, last_payload) in expected.items():
        info = await get_message(streams.engine, mid)
        assert info is not None and info.status == status
        rows = await read_events(streams.engine, mid, -1, 10)
        assert [r.seq for r in rows] == [0, 1]
        assert (rows[1].event_type, orjson.loads(rows[1].payload_json)) == (last_type, last_payload)


async def test_a_continuation_takes_the_next_free_number(streams: MessageStreams):
    mid = uuid.uuid4()
    async with streams.message_stream(mid, "cont") as s:
        await s.emit("answer", {"n": 0})
        await s.emit("error", {"code": "timeout"})
    async with streams.message_stream(mid, "cont") as s:
        assert await s.emit("answer", {"n": 2}) == 2
    rows = await read_events(streams.engine, mid, -1, 10)
    assert [r.seq for r in rows] == [0, 1, 2, 3]


async def test_the_producer_heartbeats(streams: MessageStreams):
    mid = uuid.uuid4()
    async with streams.message_stream(mid, "beat") as s:
        async with streams.engine.begin() as conn:
            old = datetime.now(UTC) - timedelta(hours=1)
            await conn.execute(
                update(messages).where(messages.c.id == mid).values(heartbeat_at=old)
            )

        async def fresh() -> bool:
            info = await get_message(streams.engine, mid)
            return info is not None and info.heartbeat_at > datetime.now(UTC) - timedelta(minutes=1)

        await _until(fresh)
        await s.emit("answer", {})


async def test_cleanup_deletes_old_events_in_batches(engine: AsyncEngine, message: uuid.UUID):
    old = datetime.now(UTC) - timedelta(days=40)
    async with engine.begin() as conn:
        await conn.execute(
            message_events.insert(),
            [
                {
                    "message_id": message,
                    "sequence_no": i,
                    "event_type": "answer",
                    "payload": {},
                    "created_at": old if i < 5 else datetime.now(UTC),
                }
                for i in range(7)
            ],
        )
    cutoff = datetime.now(UTC) - timedelta(days=30)
    result = await cleanup_message_events(engine, cutoff, batch=2)
    # Other tests' rows are recent; only these five are old enough, unless a
    # previous run left old rows behind, which this run also removed.
    assert result.deleted >= 5 and result.batches >= 3
    assert [r.seq for r in await read_events(engine, message, -1, 10)] == [5, 6]
    assert (await cleanup_message_events(engine, cutoff)).deleted == 0
    with pytest.raises(ValueError):
        await cleanup_message_events(engine, datetime(2020, 1, 1))  # noqa: DTZ001 - naive on purpose

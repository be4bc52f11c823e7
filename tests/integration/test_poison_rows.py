"""A message event PostgreSQL cannot store never blocks anyone else's (issue 11, #1)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from herald.journal.messages.store import create_message
from herald.journal.messages.writer import MessageWriter, Row
from herald.journal.tables import message_events

pytestmark = pytest.mark.integration


async def _count(engine: AsyncEngine, message_id: uuid.UUID) -> int:
    async with engine.connect() as conn:
        n = await conn.scalar(select(func.count()).where(message_events.c.message_id == message_id))
    return int(n or 0)


def _poisoned() -> float:
    return REGISTRY.get_sample_value("herald_writer_poison_rows_total") or 0.0


def _row(message_id: uuid.UUID, seq: int, payload_json: str) -> Row:
    return Row(message_id, seq, "answer", payload_json, datetime.now(UTC))


async def test_a_poison_row_is_dropped_and_counted_and_the_rest_of_its_batch_stored(
    engine: AsyncEngine,
):
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    await create_message(engine, mine, "mallory")
    await create_message(engine, theirs, "alice")
    before = _poisoned()
    writer = MessageWriter(engine, batch=1000, flush_ms=50)
    writer.start()
    try:
        rows = [
            _row(theirs, 0, '{"t":"before"}'),
            # What jsonb refuses: the escape of U+0000 ("unsupported Unicode escape").
            _row(mine, 0, '{"t":"\\u0000"}'),
            _row(theirs, 1, '{"t":"after"}'),
        ]
        writer.reserve(len(rows))
        mark = writer.add(rows)
        assert await writer.wait_durable(mark, 10), "the writer is stuck on the poison row"
        assert await _count(engine, theirs) == 2
        assert await _count(engine, mine) == 0
        assert _poisoned() == before + 1
        assert not writer.failing and writer.failing_for_s == 0.0
        # Later batches flow as usual.
        writer.reserve()
        assert await writer.wait_durable(writer.add([_row(theirs, 2, "{}")]), 10)
        assert await _count(engine, theirs) == 3
    finally:
        await asyncio.wait_for(writer.aclose(), 15)

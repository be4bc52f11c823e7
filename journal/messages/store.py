"""Chat message streams in PostgreSQL (DESIGN §5): rows, envelopes and retention.

A message's events are numbered 0, 1, 2 … with no holes: the producer takes the
numbers from one Redis counter (see ``lua/message_publish.lua``) and the writer
stores every number it was given.  So a reader that finds a hole knows the rows
after it are simply not flushed yet.

An event is stored as (sequence_no, event_type, payload, created_at) and its
envelope is rebuilt from those four values by :func:`message_envelope`, the same
function the producer used to publish it live, so replayed and live envelopes
carry the same id, type, time and data.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Text, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from herald.journal.envelope import format_time
from herald.journal.runtime.db import run_in_transaction
from herald.journal.tables import message_events, messages
from herald.journal.wire import HEAD

__all__ = [
    "EVENT_TYPE_RE",
    "MESSAGE_SOURCE",
    "TERMINAL_TYPES",
    "CleanupResult",
    "MessageInfo",
    "MessageNotFound",
    "MessageOwnedElsewhere",
    "StoredEvent",
    "cleanup_message_events",
    "create_message",
    "get_message",
    "message_envelope",
    "parse_message_id",
    "read_events",
    "read_last_seq",
    "set_status",
]

# A message's envelopes have the source MESSAGE_SOURCE/<message id>: their ids are
# sequence numbers, unique only within the message (see envelope.stream_source).
MESSAGE_SOURCE = "/herald/messages"
# The producer's own event names ("answer", "source", "end"); envelopes prefix
# them with "message." to follow Herald's noun.verb type rule.
EVENT_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}(\.[a-z0-9_]{1,32}){0,3}$")
TERMINAL_TYPES = frozenset({"end", "error"})
Status = Literal["streaming", "complete", "failed"]


class MessageNotFound(LookupError):
    """No such message (or, to its reader, not theirs: the two are not told apart)."""


class MessageOwnedElsewhere(Exception):
    """A producer opened a message id that belongs to another user."""


@dataclass(frozen=True, slots=True)
class MessageInfo:
    id: uuid.UUID
    user_id: str
    status: Status
    heartbeat_at: datetime
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "user": self.user_id,
            "status": self.status,
            "heartbeat_at": format_time(self.heartbeat_at),
            "created_at": format_time(self.created_at),
            "updated_at": format_time(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    event_type: str
    payload_json: bytes
    created_at: datetime


def parse_message_id(raw: str) -> uuid.UUID:
    """A message id is a UUID; raises ``ValueError`` otherwise."""
    return uuid.UUID(raw)


def message_envelope(
    message_id: uuid.UUID, seq: int | None, event_type: str, payload_json: bytes, time: datetime
) -> bytes:
    """The envelope of one message event; ``seq=None`` gives the tail only (the
    part after the id, which the publish script completes)."""
    tail = b"".join(
        (
            b'","source":"' + MESSAGE_SOURCE.encode() + b"/" + str(message_id).encode(),
            b'","type":"message.' + event_type.encode(),
            b'","time":"' + format_time(time).encode(),
            b'","subject":"message:' + str(message_id).encode(),
            b'","datacontenttype":"application/json","data":',
            payload_json,
            b"}",
        )
    )
    return tail if seq is None else HEAD + str(seq).encode() + tail


_LAST = select(func.coalesce(func.max(message_events.c.sequence_no), -1))


def _info(row: Any) -> MessageInfo:
    return MessageInfo(
        row.id, row.user_id, row.status, row.heartbeat_at, row.created_at, row.updated_at
    )


async def create_message(
    engine: AsyncEngine, message_id: uuid.UUID, user_id: str
) -> tuple[MessageInfo, int]:
    """Create the message, or take up an existing one of the same user (a
    continuation): it is ``streaming`` again, with a fresh heartbeat.  Returns it
    with the highest stored sequence number (-1: none).  Raises
    ``MessageOwnedElsewhere`` if the id belongs to another user."""

    async def work(conn: AsyncConnection) -> tuple[MessageInfo, int]:
        await conn.execute(
            pg_insert(messages)
            .values(id=message_id, user_id=user_id)
            .on_conflict_do_nothing(index_elements=["id"])
        )
        row = (
            await conn.execute(
                select(messages).where(messages.c.id == message_id).with_for_update()
            )
        ).one()
        if row.user_id != user_id:
            raise MessageOwnedElsewhere(f"message {message_id} belongs to another user")
        row = (
            await conn.execute(
                update(messages)
                .where(messages.c.id == message_id)
                .values(status="streaming", heartbeat_at=func.now(), updated_at=func.now())
                .returning(*messages.c)
            )
        ).one()
        last = await conn.scalar(_LAST.where(message_events.c.message_id == message_id))
        return _info(row), -1 if last is None else int(last)

    return await run_in_transaction(engine, work)


async def get_message(engine: AsyncEngine, message_id: uuid.UUID) -> MessageInfo | None:
    async def work(conn: AsyncConnection) -> MessageInfo | None:
        row = (await conn.execute(select(messages).where(messages.c.id == message_id))).first()
        return None if row is None else _info(row)

    return await run_in_transaction(engine, work)


async def set_status(
    engine: AsyncEngine, message_id: uuid.UUID, status: Status | None = None
) -> bool:
    """Record a heartbeat (``status=None``) or a final status.  False: no such message."""
    values: dict[str, Any] = {"heartbeat_at": func.now(), "updated_at": func.now()}
    if status is not None:
        values["status"] = status

    async def work(conn: AsyncConnection) -> bool:
        result = await conn.execute(
            update(messages).where(messages.c.id == message_id).values(**values)
        )
        return bool(result.rowcount)

    return await run_in_transaction(engine, work)


async def read_events(
    engine: AsyncEngine, message_id: uuid.UUID, after: int, limit: int
) -> list[StoredEvent]:
    """Up to ``limit`` stored events with ``sequence_no > after``, in order."""

    async def work(conn: AsyncConnection) -> list[StoredEvent]:
        rows = await conn.execute(
            select(
                message_events.c.sequence_no,
                message_events.c.event_type,
                message_events.c.payload.cast(Text),  # the stored JSON text as is
                message_events.c.created_at,
            )
            .where(message_events.c.message_id == message_id)
            .where(message_events.c.sequence_no > after)
            .order_by(message_events.c.sequence_no)
            .limit(limit)
        )
        return [StoredEvent(r[0], r[1], r[2].encode(), r[3]) for r in rows]

    return await run_in_transaction(engine, work)


async def read_last_seq(engine: AsyncEngine, message_id: uuid.UUID) -> int:
    """The highest stored sequence number of a message (-1: none)."""

    async def work(conn: AsyncConnection) -> int:
        last = await conn.scalar(_LAST.where(message_events.c.message_id == message_id))
        return -1 if last is None else int(last)

    return await run_in_transaction(engine, work)


@dataclass(frozen=True, slots=True)
class CleanupResult:
    deleted: int
    batches: int

    def to_json(self) -> dict[str, int]:
        return {"deleted": self.deleted, "batches": self.batches}


async def cleanup_message_events(
    engine: AsyncEngine, older_than: datetime, *, batch: int = 5000
) -> CleanupResult:
    """Delete message events created before ``older_than``, ``batch`` rows per
    transaction so no single transaction holds locks on the whole table; returns
    how many rows and batches.  Safe to run while producers write."""
    if older_than.tzinfo is None:
        raise ValueError("older_than must be timezone-aware (UTC)")
    if batch < 1:
        raise ValueError("batch must be at least 1")
    older_than = older_than.astimezone(UTC)
    deleted = batches = 0
    while True:

        async def work(conn: AsyncConnection) -> int:
            victims = (
                select(message_events.c.message_id, message_events.c.sequence_no)
                .where(message_events.c.created_at < older_than)
                .limit(batch)
                .with_for_update(skip_locked=True)
                .cte("victims")
            )
            result = await conn.execute(
                delete(message_events)
                .where(
                    text(
                        "(message_id, sequence_no) IN (SELECT message_id, sequence_no FROM victims)"
                    )
                )
                .add_cte(victims)
            )
            return int(result.rowcount)

        n = await run_in_transaction(engine, work)
        if n == 0:
            return CleanupResult(deleted, batches)
        deleted += n
        batches += 1
        if n < batch:
            return CleanupResult(deleted, batches)

"""The producer API of chat message streams (DESIGN §5).

    async with messages.message_stream(message_id, user_id) as s:
        await s.emit("answer", {"text": "Hel"})

Each ``emit`` numbers the event and publishes it live in one Redis round trip
(``lua/message_publish.lua``), then hands it to the process's batched writer; it
does not wait for PostgreSQL, so a slow or failing database never delays live
delivery.  Closing the stream — on every exit path: normal end, exception,
cancellation — emits the terminal event if the producer did not (``end``, or
``error`` with code ``producer_error`` / ``producer_cancelled``), waits for the
writer to store the rows and records the message's final status.  While open,
the producer heartbeats ``messages.heartbeat_at`` so readers can tell a live
producer from a dead one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from herald.journal.base import JournalUnavailable
from herald.journal.envelope import EnvelopeTooLarge, InvalidEnvelope
from herald.journal.messages.keys import channel_of, seq_key_of
from herald.journal.messages.store import (
    EVENT_TYPE_RE,
    TERMINAL_TYPES,
    MessageInfo,
    create_message,
    message_envelope,
    read_last_seq,
    set_status,
)
from herald.journal.messages.writer import MessageWriter, Row
from herald.journal.runtime.clients import make_redis
from herald.journal.runtime.db import DatabaseUnavailable, make_engine
from herald.journal.runtime.settings import Settings
from herald.journal.runtime.sharded import live_publish, publish_script
from herald.journal.storable import unstorable
from herald.journal.wire import MESSAGE_EPOCH, encode_frame, lua_frame_args

__all__ = ["MessageStream", "MessageStreams", "connect"]

log = logging.getLogger("herald.producer")

_FRAME_ARGS = (*lua_frame_args(), MESSAGE_EPOCH)
_SCRIPT = resources.files("herald.journal.messages").joinpath("lua/publish.lua").read_text()
_COUNTER_TTL_S = 7 * 24 * 3600
_CLOSE_WAIT_S = 30.0


class MessageStreams:
    """Opens message streams; one per process, built with the process's clients."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        redis: aioredis.Redis,
        writer: MessageWriter,
        settings: Settings,
    ) -> None:
        self.engine = engine
        self.redis = redis
        self.writer = writer
        self.settings = settings
        self._script = redis.register_script(publish_script(_SCRIPT, redis))
        writer.on_renumbered = self._republish

    def message_stream(self, message_id: uuid.UUID | str, user_id: str) -> MessageStream:
        """``async with`` it to produce one answer (a new message or a continuation)."""
        mid = message_id if isinstance(message_id, uuid.UUID) else uuid.UUID(str(message_id))
        return MessageStream(self, mid, user_id)

    def prepare(
        self, message_id: uuid.UUID, event_type: str, payload: Any
    ) -> tuple[str, bytes, datetime]:
        """Validate one event; returns its payload JSON, envelope tail and time."""
        if not isinstance(event_type, str) or not EVENT_TYPE_RE.fullmatch(event_type):
            raise InvalidEnvelope(
                f"event type {event_type!r} must match {EVENT_TYPE_RE.pattern} (e.g. 'answer')"
            )
        if not isinstance(payload, dict):
            raise InvalidEnvelope(f"payload must be a JSON object, not {type(payload).__name__}")
        if (where := unstorable(payload, "payload")) is not None:
            raise InvalidEnvelope(f"{where} contains U+0000 (NUL), which PostgreSQL cannot store")
        try:
            payload_json = orjson.dumps(payload)
        except TypeError as e:
            raise InvalidEnvelope(f"payload is not JSON-serialisable: {e}") from e
        now = datetime.now(UTC)
        tail = message_envelope(message_id, None, event_type, payload_json, now)
        size = len(tail) + 40
        if size > self.settings.max_envelope_bytes:
            raise EnvelopeTooLarge(size, self.settings.max_envelope_bytes)
        return payload_json.decode(), tail, now

    async def publish(
        self,
        message_id: uuid.UUID,
        events: Sequence[tuple[str, Any]],
        *,
        floor: int | None,
    ) -> tuple[list[Row], int]:
        """Number, publish live and buffer ``events`` (type, payload) in one round trip.

        ``floor`` is the caller's last known number (None: unknown; then PostgreSQL
        is asked only if Redis lost the counter).  Raises ``InvalidEnvelope`` /
        ``EnvelopeTooLarge`` before anything is published, ``WriterOverloaded``
        when the writer is full, ``JournalUnavailable`` when Redis fails.  Returns
        the rows and the writer mark to wait for.
        """
        prepared = [self.prepare(message_id, t, p) for t, p in events]
        if not prepared:
            return [], 0
        self.writer.reserve(len(prepared))
        try:
            last = await self._call(message_id, floor, [tail for _, tail, _ in prepared])
        except BaseException:
            self.writer.release(len(prepared))
            raise
        first = last - len(prepared) + 1
        rows = [
            Row(message_id, first + i, t, payload_json, at)
            for i, ((t, _), (payload_json, _, at)) in enumerate(zip(events, prepared, strict=True))
        ]
        return rows, self.writer.add(rows)

    async def _call(self, message_id: uuid.UUID, floor: int | None, tails: list[bytes]) -> int:
        keys = [seq_key_of(message_id), channel_of(message_id)]
        arg_floor: str | int = "?" if floor is None else floor
        try:
            for _ in range(2):
                try:
                    last = int(
                        await self._script(
                            keys=keys, args=[arg_floor, _COUNTER_TTL_S, *_FRAME_ARGS, *tails]
                        )
                    )
                except NoScriptError:
                    continue  # redis-py reloads it on the next call
                if last != -2:
                    return last
                arg_floor = await self._stored_max(message_id)
            raise JournalUnavailable("the message counter could not be initialised")
        except RedisError as e:
            raise JournalUnavailable(f"Redis is unavailable: {e}") from e

    async def _stored_max(self, message_id: uuid.UUID) -> int:
        return await read_last_seq(self.engine, message_id)

    async def _republish(self, row: Row, seq: int) -> None:
        """A row the writer had to renumber is published again under its number."""
        payload = row.payload_json.encode()
        envelope = message_envelope(row.message_id, seq, row.event_type, payload, row.created_at)
        previous = str(seq - 1).encode() if seq > 0 else b""
        frame = encode_frame(MESSAGE_EPOCH, previous, envelope)
        await live_publish(self.redis, channel_of(row.message_id), frame)


class MessageStream:
    """One producer of one message.  Use ``async with``; see the module docstring."""

    def __init__(self, streams: MessageStreams, message_id: uuid.UUID, user_id: str) -> None:
        self.streams = streams
        self.message_id = message_id
        self.user_id = user_id
        self.info: MessageInfo | None = None
        self.last = -1  # last number this producer knows of
        self.terminal: str | None = None
        self._mark = 0
        self._heartbeat: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MessageStream:
        self.info, self.last = await create_message(
            self.streams.engine, self.message_id, self.user_id
        )
        self._heartbeat = asyncio.create_task(self._beat(), name=f"heartbeat {self.message_id}")
        return self

    async def emit(self, event_type: str, payload: dict[str, Any]) -> int:
        """Publish one event live at once and queue it for PostgreSQL; returns its
        number.  ``end`` and ``error`` are terminal: nothing may follow them."""
        return (await self.emit_many([(event_type, payload)]))[-1]

    async def emit_many(self, events: Sequence[tuple[str, dict[str, Any]]]) -> list[int]:
        if self.terminal is not None:
            raise InvalidEnvelope(f"message already ended with {self.terminal!r}")
        for i, (event_type, _) in enumerate(events):
            if event_type in TERMINAL_TYPES and i != len(events) - 1:
                raise InvalidEnvelope(f"{event_type!r} is terminal: it must be the last event")
        rows, mark = await self.streams.publish(self.message_id, events, floor=self.last)
        if rows:
            self.last = rows[-1].seq
            self._mark = mark
            if rows[-1].event_type in TERMINAL_TYPES:
                self.terminal = rows[-1].event_type
        return [r.seq for r in rows]

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: Any, tb: Any) -> None:
        # Shielded: a cancelled producer still ends its message properly.
        await asyncio.shield(self._close(exc_type))

    async def _close(self, exc_type: type[BaseException] | None) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        failed = exc_type is not None
        if self.terminal is None:
            event: tuple[str, dict[str, Any]]
            if exc_type is None:
                event = ("end", {})
            elif issubclass(exc_type, asyncio.CancelledError):
                event = (
                    "error",
                    {"code": "producer_cancelled", "message": "the answer was cancelled"},
                )
            else:
                event = ("error", {"code": "producer_error", "message": "the answer failed"})
            try:
                await self.emit(*event)
            except Exception as e:
                log.warning("message %s: could not emit its terminal event: %s", self.message_id, e)
        failed = failed or self.terminal == "error"
        if not await self.streams.writer.wait_durable(self._mark, _CLOSE_WAIT_S):
            log.error(
                "message %s: events not yet stored after %.0f s; the writer keeps retrying",
                self.message_id,
                _CLOSE_WAIT_S,
            )
        try:
            await set_status(
                self.streams.engine, self.message_id, "failed" if failed else "complete"
            )
        except DatabaseUnavailable as e:
            log.error("message %s: final status not recorded: %s", self.message_id, e)

    async def _beat(self) -> None:
        interval = self.streams.settings.producer_heartbeat_s
        while True:
            await asyncio.sleep(interval)
            try:
                await set_status(self.streams.engine, self.message_id)
            except DatabaseUnavailable as e:
                log.warning("message %s: heartbeat not recorded: %s", self.message_id, e)


@contextlib.asynccontextmanager
async def connect(settings: Settings) -> AsyncIterator[MessageStreams]:
    """Message streams for a producer outside the server (a worker, a script):
    builds its own engine, Redis client and writer, and flushes on exit."""
    engine = make_engine(settings)
    client = make_redis(settings)
    writer = new_writer(settings, engine)
    writer.start()
    try:
        yield MessageStreams(engine=engine, redis=client, writer=writer, settings=settings)
    finally:
        await writer.aclose()
        await client.aclose()
        await engine.dispose()


def new_writer(settings: Settings, engine: AsyncEngine) -> MessageWriter:
    return MessageWriter(
        engine,
        batch=settings.journal_batch,
        flush_ms=settings.journal_flush_ms,
        buffer_max=settings.journal_buffer_max,
        retry_max_s=settings.journal_retry_max_s,
    )

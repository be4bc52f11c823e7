"""Exactly-once, in-order delivery of one chat message's events (DESIGN §5).

Same ordering rule as user streams: the caller subscribes to the message's live
channel first (confirmed), then the reader reads PostgreSQL after the cursor in
pages, then merges live messages by sequence number.  Numbers are contiguous, so:

* ``seq <= last``: a duplicate (already delivered from the table) — dropped;
* ``seq == last + 1``: the next event — delivered;
* ``seq > last + 1``: a hole, i.e. events the writer has not flushed yet — the
  live message is held back and the table is re-read every ``flush_s`` until the
  hole is filled.

An event numbered before the subscription but not flushed yet would be neither
in the table nor live; with nothing after it, no hole would show.  So after
subscribing the reader also asks for the newest number handed out (the Redis
counter, ``latest``) and treats everything up to it as expected.

The stream ends after a terminal event (``end``, ``error``).  A watchdog ends it
with a synthetic ``error`` envelope when the producer is gone: the message
failed, its heartbeat is older than ``stale_s``, or it was deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from herald.journal.messages.store import (
    TERMINAL_TYPES,
    MessageInfo,
    get_message,
    message_envelope,
    read_events,
)
from herald.journal.runtime.db import DatabaseUnavailable
from herald.journal.wire import sse_data, sse_frame
from herald.journal.wire import watchdog_envelope as wire_watchdog_envelope
from herald.streams.hub import LiveMessage, Subscription
from herald.streams.live import Overflowed, run_live

__all__ = ["MessageReader", "ReaderLimits", "frame", "is_terminal", "watchdog_envelope"]

Emit = Callable[[bytes], Awaitable[None]]
Latest = Callable[[], Awaitable[int]]
_TERMINAL_MARKS = tuple(b'"type":"message.' + t.encode() + b'","' for t in sorted(TERMINAL_TYPES))


def frame(seq: int, envelope: bytes) -> bytes:
    return sse_frame(str(seq), envelope)


def is_terminal(envelope: bytes) -> bool:
    return any(mark in envelope for mark in _TERMINAL_MARKS)


def watchdog_envelope(message_id: uuid.UUID, code: str, detail: str) -> bytes:
    """The synthetic ``error`` that ends a stream whose producer is gone.  It has no
    sequence number (it is not stored): its id is ``watchdog-<random>``, unique like
    every CloudEvents id, and its SSE frame carries no ``id:``, so the client's
    cursor stays on the last real event."""
    payload = orjson.dumps({"code": code, "message": detail})
    return wire_watchdog_envelope(
        message_envelope(message_id, None, "error", payload, datetime.now(UTC))
    )


@dataclass(frozen=True, slots=True)
class ReaderLimits:
    page: int = 500
    flush_s: float = 0.1  # how soon a hole is re-read
    watchdog_s: float = 5.0
    stale_s: float = 90.0
    max_held: int = 1000  # live messages held back behind a hole


class MessageReader:
    """Delivers the events of ``message_id`` after ``after`` (-1: from the start)."""

    def __init__(
        self,
        engine: AsyncEngine,
        message_id: uuid.UUID,
        after: int,
        limits: ReaderLimits,
        latest: Latest | None = None,
    ) -> None:
        self.engine = engine
        self.message_id = message_id
        self.last = after
        self.known = after  # the newest number known to exist
        self._latest = latest
        self.limits = limits
        self.ended = False
        self.delivered = 0
        self._held: dict[int, bytes] = {}
        self._out: list[bytes] = []
        self._next_watch = self._next_reread = 0.0  # loop times, set by ``run``

    # -- pieces ----------------------------------------------------------------

    def _deliver(self, seq: int, envelope: bytes) -> None:
        self._out.append(frame(seq, envelope))
        self.last = seq
        self.delivered += 1
        if is_terminal(envelope):
            self.ended = True
            self._held.clear()

    async def refill(self) -> None:
        """Read the table after ``last`` until a hole, the end, or a terminal event."""
        while not self.ended:
            rows = await read_events(self.engine, self.message_id, self.last, self.limits.page)
            for row in rows:
                if row.seq != self.last + 1:
                    return  # a hole: not flushed yet
                env = message_envelope(
                    self.message_id, row.seq, row.event_type, row.payload_json, row.created_at
                )
                self._deliver(row.seq, env)
                if self.ended:
                    return
            if len(rows) < self.limits.page:
                break
        self._release_held()

    def _release_held(self) -> None:
        held = self._held
        while not self.ended and self.last + 1 in held:
            self._deliver(self.last + 1, held.pop(self.last + 1))
        for seq in [s for s in held if s <= self.last]:
            del held[seq]

    def offer(self, item: LiveMessage) -> None:
        seq = item.id.ms
        if seq <= self.last or self.ended:
            return
        self.known = max(self.known, seq)
        if seq == self.last + 1:
            self._deliver(seq, item.envelope)
            self._release_held()
            return
        if len(self._held) >= self.limits.max_held:
            raise Overflowed("too many live events held back behind a hole")
        self._held[seq] = item.envelope

    @property
    def has_hole(self) -> bool:
        return self.last < self.known and not self.ended

    async def learn_latest(self) -> None:
        """Call once subscribed (and after a resync): anything numbered up to the
        counter is expected even if it never arrives live."""
        if self._latest is not None:
            self.known = max(self.known, await self._latest())

    def take(self) -> bytes:
        out, self._out = b"".join(self._out), []
        return out

    async def check_producer(self) -> bytes | None:
        """The watchdog: a terminal envelope if the producer is gone, else None."""
        info: MessageInfo | None = await get_message(self.engine, self.message_id)
        if info is None:
            return watchdog_envelope(self.message_id, "message_missing", "the message was deleted")
        if info.status == "failed":
            return watchdog_envelope(self.message_id, "producer_failed", "the producer failed")
        if info.status == "streaming":
            age = (datetime.now(UTC) - info.heartbeat_at).total_seconds()
            if age > self.limits.stale_s:
                return watchdog_envelope(
                    self.message_id,
                    "producer_stale",
                    f"no heartbeat from the producer for {age:.0f} s",
                )
        return None

    # -- the stream ------------------------------------------------------------

    async def run(
        self, sub: Subscription, emit: Emit, keepalive_s: float, until: float | None = None
    ) -> None:
        """Replay, then live-tail until a terminal event, the watchdog, ``until``
        (token expiry, loop time), or the subscription closing (the live loop is
        ``herald.streams.live.run_live``, shared with user streams)."""
        loop = asyncio.get_running_loop()
        await self.learn_latest()
        await self.refill()
        if chunk := self.take():
            await emit(chunk)
        if self.ended:
            return
        now = loop.time()
        self._next_watch = now + self.limits.watchdog_s
        self._next_reread = now + self.limits.flush_s
        await run_live(sub, emit, self, keepalive_s, until)

    # -- LiveHandler -------------------------------------------------------------

    async def on_messages(self, items: list[LiveMessage]) -> bytes:
        for item in items:
            self.offer(item)
        return self.take()

    async def on_resync(self) -> bytes:
        await self.learn_latest()
        await self._reread()
        return self.take()

    def fast(self, message: LiveMessage, id_: bytes, tail: bytes) -> bytes | None:
        """The fast path (``streams.live``): the frame of the next event, or None
        when the event needs ``offer`` (a hole, events held back, a terminal event)."""
        seq = message.id.ms
        if seq != self.last + 1 or self._held or self.ended or is_terminal(message.envelope):
            return None
        self.last = seq
        self.known = max(self.known, seq)
        self.delivered += 1
        return b"id: " + str(seq).encode() + tail

    def wake_at(self) -> float | None:
        return min(self._next_watch, self._next_reread) if self.has_hole else self._next_watch

    async def on_timer(self, now: float) -> bytes:
        if self.has_hole and now >= self._next_reread:
            await self._reread()
            self._next_reread = now + self.limits.flush_s
        elif not self.has_hole:
            self._next_reread = now + self.limits.flush_s
        if self.ended or now < self._next_watch:
            return self.take()
        self._next_watch = now + self.limits.watchdog_s
        verdict = await self._watch()
        if verdict is None:
            return self.take()
        await self._reread()  # the last rows may have landed meanwhile
        chunk = self.take()
        if not self.ended:
            chunk += sse_data(verdict)
            self.ended = True
        return chunk

    async def _reread(self) -> None:
        # On a database fault keep tailing live; the hole is re-read on the next tick.
        with contextlib.suppress(DatabaseUnavailable):
            await self.refill()

    async def _watch(self) -> bytes | None:
        try:
            return await self.check_producer()
        except DatabaseUnavailable:
            return None

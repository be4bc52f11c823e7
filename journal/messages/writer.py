"""The batched writer of chat message events (DESIGN §5).

One per process, shared by every producer.  It flushes

* as soon as ``batch`` events are buffered,
* ``flush_ms`` after the oldest buffered event arrived — on a real timer, so the
  last events of an answer are written even when nothing follows them,
* when asked (a producer closing, ``aclose``).

A flush takes everything buffered (up to ``MAX_ROWS`` per statement), so under load
batches grow by themselves.  Rows go in with one ``INSERT … SELECT FROM unnest(…)``
with five *binary* array parameters, whatever the row count.  bench/journal.py
measured why: text-format arrays cost 13 µs of Python per row (psycopg quotes each
element), binary ones ~1.5 µs, and then COPY into a temporary table is no faster.
``MAX_ROWS`` bounds how long one statement's parameters hold the event loop.

A failed flush keeps its rows at the front of the buffer and is retried
with exponential backoff; the buffer is bounded, and a producer that finds it
full gets ``WriterOverloaded`` instead of a silent drop.  A batch refused for its
*content* (a data or constraint error, not a lost connection) would fail the same
way forever, so it is written again row by row, each under a savepoint: the rows
that fail alone are poison — logged, counted in ``herald_writer_poison_rows`` and
passed over — and every other row is stored.  ``failing_for_s`` tells readiness
how long flushes have been failing, so a stuck writer is seen.

Conflicts on (message_id, sequence_no): an identical re-send is a no-op; a
different event under a taken number is stored under the next free number and
reported through ``on_renumbered`` (the producer republishes it live).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.errors import UniqueViolation
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from herald.journal.runtime.metrics import (
    WRITER_BACKLOG,
    WRITER_FAILURES,
    WRITER_FLUSH_ROWS,
    WRITER_FLUSH_SECONDS,
    WRITER_OVERLOADED,
    WRITER_POISON_ROWS,
)

__all__ = ["MAX_ROWS", "MessageWriter", "Row", "WriterOverloaded"]

log = logging.getLogger("herald.writer")

MAX_ROWS = 1000
_FIRST_BACKOFF_S = 0.05

_COLUMNS = "message_events (message_id, sequence_no, event_type, payload, created_at)"
_UNNEST = (
    "SELECT * FROM unnest(%b::uuid[], %b::int[], %b::text[], %b::text[]::jsonb[], "
    "%b::timestamptz[])"
)
# The usual case: every row is new.  No ON CONFLICT clause: checking for one cost
# ~1.3 µs of server CPU per row (bench/journal.py); a duplicate key rolls back.
_INSERT = f"INSERT INTO {_COLUMNS} {_UNNEST}"
# After a duplicate key, this one tells which rows went in.
_INSERT_RETURNING = (
    f"INSERT INTO {_COLUMNS} {_UNNEST} ON CONFLICT DO NOTHING RETURNING message_id, sequence_no"
)
_SAME = (
    "SELECT 1 FROM message_events WHERE message_id = %s AND sequence_no = %s "
    "AND event_type = %s AND payload = %s::jsonb"
)
_NEXT_FREE = (
    "INSERT INTO message_events (message_id, sequence_no, event_type, payload, created_at) "
    "SELECT %s, coalesce(max(sequence_no), -1) + 1, %s, %s::jsonb, %s FROM message_events "
    "WHERE message_id = %s RETURNING sequence_no"
)
_EXISTING = "SELECT id FROM messages WHERE id = ANY(%s::uuid[])"


class WriterOverloaded(Exception):
    """The writer's buffer is full (the database has been failing for a while)."""

    code = "writer_overloaded"


@dataclass(frozen=True, slots=True)
class Row:
    message_id: uuid.UUID
    seq: int
    event_type: str
    payload_json: str
    created_at: datetime


Renumbered = Callable[[Row, int], Awaitable[None]]


class MessageWriter:
    """Buffer rows, write them in bulk; ``wait_durable`` tells a producer when its
    rows are in the table."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch: int = 16,
        flush_ms: int = 100,
        buffer_max: int = 10000,
        retry_max_s: float = 5.0,
        on_renumbered: Renumbered | None = None,
    ) -> None:
        self.engine = engine
        self.batch = batch
        self.flush_s = flush_ms / 1000
        self.limit = buffer_max
        self.retry_max_s = retry_max_s
        self.on_renumbered = on_renumbered
        self._rows: deque[tuple[float, Row]] = deque()
        self._reserved = 0
        self._added = 0  # rows ever added; the n-th row is durable once _durable >= n
        self._durable = 0
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self._urgent = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.failing = False
        self._failing_since: float | None = None

    # -- producers -------------------------------------------------------------

    @property
    def failing_for_s(self) -> float:
        """Seconds since the first of the flushes that have failed in a row (0: none)."""
        since = self._failing_since
        return 0.0 if since is None else time.monotonic() - since

    @property
    def backlog(self) -> int:
        """Rows buffered and not yet in the table."""
        return len(self._rows)

    def reserve(self, n: int = 1) -> None:
        """Claim room for ``n`` rows before publishing them live, so a row that was
        published always has a place here.  Raises ``WriterOverloaded``."""
        if self._closing:
            raise WriterOverloaded("the writer is shutting down")
        if len(self._rows) + self._reserved + n > self.limit:
            WRITER_OVERLOADED.inc(n)
            raise WriterOverloaded(
                f"{len(self._rows)} events are waiting for the database "
                f"(limit {self.limit}); retry later"
            )
        self._reserved += n

    def release(self, n: int = 1) -> None:
        self._reserved = max(0, self._reserved - n)

    def add(self, rows: list[Row]) -> int:
        """Buffer reserved rows; returns the mark to pass to ``wait_durable``."""
        now = time.monotonic()
        was_empty = not self._rows
        self._reserved = max(0, self._reserved - len(rows))
        self._rows.extend((now, row) for row in rows)
        self._added += len(rows)
        # Wake the flush loop only when it must act sooner than it planned: the
        # first row starts the timer, a full batch flushes now.  (Waking it on
        # every row cost the live path ~0.9 ms at p99; bench/journal.py.)
        if len(self._rows) >= self.batch and not self._urgent:
            self._urgent = True
            self._wake.set()
        elif was_empty:
            self._wake.set()
        return self._added

    async def wait_durable(
        self, mark: int, timeout_s: float | None = None, *, urge: bool = True
    ) -> bool:
        """Wait until every row up to ``mark`` is written, asking for a flush now
        unless ``urge`` is False.  False if ``timeout_s`` passed first (the rows stay
        buffered and are retried)."""
        if self._durable >= mark:
            return True
        if urge:
            self._urgent = True
            self._wake.set()
        try:
            async with asyncio.timeout(timeout_s), self._progress:
                await self._progress.wait_for(lambda: self._durable >= mark)
            return True
        except TimeoutError:
            return False

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="herald-message-writer")

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Flush what is buffered (giving up after ``timeout_s``, loudly), then stop."""
        self._closing = True
        if self._task is None:
            return
        ok = await self.wait_durable(self._added, timeout_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if not ok:
            log.error(
                "message writer stopped with %d events not written to the database",
                len(self._rows),
            )

    # -- the flush loop ------------------------------------------------------------

    async def _run(self) -> None:
        backoff = _FIRST_BACKOFF_S
        while True:
            if not self._rows:
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._urgent:
                due = self._rows[0][0] + self.flush_s - time.monotonic()
                if due > 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(due):
                            await self._wake.wait()
                    continue
            rows = [self._rows[i][1] for i in range(min(len(self._rows), MAX_ROWS))]
            self._urgent = len(self._rows) - len(rows) >= self.batch
            try:
                await self._flush(rows)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                WRITER_FAILURES.inc()
                self.failing = True
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                log.warning(
                    "flushing %d message events failed (%s); retrying in %.2f s",
                    len(rows),
                    _reason(e),
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.retry_max_s)
                self._urgent = True
                continue
            backoff = _FIRST_BACKOFF_S
            self.failing = False
            self._failing_since = None
            for _ in rows:
                self._rows.popleft()
            WRITER_BACKLOG.set(len(self._rows))
            async with self._progress:
                self._durable += len(rows)
                self._progress.notify_all()

    async def _flush(self, rows: list[Row]) -> None:
        started = time.perf_counter()
        try:
            renumbered = await self._write(rows)
        except (DataError, IntegrityError) as e:
            if e.connection_invalidated:
                raise
            log.warning(
                "flushing %d message events failed for their content (%s); writing them one by one",
                len(rows),
                _reason(e),
            )
            renumbered = await self._isolate(rows)
        WRITER_FLUSH_ROWS.observe(len(rows))
        WRITER_FLUSH_SECONDS.observe(time.perf_counter() - started)
        if self.on_renumbered is not None:
            for row, seq in renumbered:
                with contextlib.suppress(Exception):
                    await self.on_renumbered(row, seq)

    async def _isolate(self, rows: list[Row]) -> list[tuple[Row, int]]:
        """Write ``rows`` one by one, each under a savepoint; a row that fails alone
        for its content is poison: logged, counted and passed over."""
        renumbered: list[tuple[Row, int]] = []
        async with self.engine.begin() as conn:
            for row in rows:
                try:
                    async with conn.begin_nested():
                        renumbered += await _insert(conn, [row])
                except (DataError, IntegrityError) as e:
                    if e.connection_invalidated:
                        raise
                    WRITER_POISON_ROWS.inc()
                    log.error(
                        "message %s: event %d (%s) cannot be stored and is dropped: %s",
                        row.message_id,
                        row.seq,
                        row.event_type,
                        _reason(e),
                    )
        return renumbered

    async def _write(self, rows: list[Row]) -> list[tuple[Row, int]]:
        renumbered: list[tuple[Row, int]] = []
        try:
            try:
                async with self.engine.begin() as conn:
                    await conn.exec_driver_sql(_INSERT, _arrays(rows))
            except IntegrityError as e:
                if not isinstance(e.orig, UniqueViolation):
                    raise
                # Some numbers are taken: sort the rows out one by one.
                async with self.engine.begin() as conn:
                    renumbered = await _insert(conn, rows)
        except IntegrityError as e:
            if "message_events_message_id_messages" not in str(e.orig):
                raise
            # The message was deleted while its producer still wrote: its rows have
            # nowhere to go.  Write the others; count and report the orphans.
            async with self.engine.begin() as conn:
                alive = await _existing(conn, {r.message_id for r in rows})
                kept = [r for r in rows if r.message_id in alive]
                renumbered = await _insert(conn, kept) if kept else []
            WRITER_FAILURES.inc()
            log.warning(
                "dropped %d events of deleted messages %s",
                len(rows) - len(kept),
                sorted(str(m) for m in {r.message_id for r in rows} - alive),
            )
        return renumbered


def _arrays(rows: list[Row]) -> tuple[list[Any], ...]:
    return (
        [r.message_id for r in rows],
        [r.seq for r in rows],
        [r.event_type for r in rows],
        [r.payload_json for r in rows],
        [r.created_at for r in rows],
    )


async def _insert(conn: AsyncConnection, rows: list[Row]) -> list[tuple[Row, int]]:
    """Insert ``rows``; returns the rows that had to take a new number, with it."""
    written = await conn.exec_driver_sql(_INSERT_RETURNING, _arrays(rows))
    done: set[tuple[Any, ...]] = {tuple(r) for r in written}
    if len(done) == len(rows):
        return []
    renumbered = []
    for row in rows:
        if (row.message_id, row.seq) in done:
            continue
        same = await conn.exec_driver_sql(
            _SAME, (row.message_id, row.seq, row.event_type, row.payload_json)
        )
        if same.first() is not None:
            continue  # an identical re-send: already stored
        taken = await conn.exec_driver_sql(
            _NEXT_FREE,
            (row.message_id, row.event_type, row.payload_json, row.created_at, row.message_id),
        )
        seq = int(taken.scalar_one())
        renumbered.append((row, seq))
        log.warning(
            "message %s: sequence %d was taken by another event; stored as %d",
            row.message_id,
            row.seq,
            seq,
        )
    return renumbered


async def _existing(conn: AsyncConnection, ids: set[uuid.UUID]) -> set[uuid.UUID]:
    result = await conn.exec_driver_sql(_EXISTING, (list(ids),))
    return {r[0] for r in result}


def _reason(exc: BaseException) -> str:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    first = str(orig).strip().splitlines()
    return first[0] if first else type(orig).__name__

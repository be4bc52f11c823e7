"""The live phase of every SSE stream: one loop shared by user streams and message readers.

``run_live`` takes what the hub queued for one subscription, hands the messages to
the stream's ``LiveHandler`` (which turns them into SSE frames, refilling holes
from its journal), and writes all frames of one wake-up as one chunk.  The loop
owns what every stream has in common:

* the hub's signals: RESYNC asks the handler to re-read its journal; CLOSE ends
  the stream after flushing what is pending; OVERFLOW does the same and raises
  ``Overflowed`` (the client resumes from its cursor);
* the keepalive comment after ``keepalive_s`` with nothing written;
* the end at ``until`` (the token's expiry, loop time), also for a stream too busy
  to ever wait;
* the handler's own timer (``wake_at``/``on_timer``: the message reader's hole
  re-read and watchdog).

**The fast path.**  While the loop waits, and if ``emit`` is a bound method of a
``DirectWriter`` (``api.sse.EventStreamResponse``) and the handler can render a
message without I/O (``FastHandler.fast``), the subscription carries a ``_Live``
as its ``Direct``: the hub calls ``push`` for each message, the handler renders
the frame from bytes the hub encoded once (or declines: a hole, a new epoch, a
terminal event), and ``flush``, called by the hub once it has handed the
subscriber all of its messages of a burst, writes them as one chunk from the
hub's own loop (``send`` does both for a burst of one message, the usual case).
No task wakes per delivery.  A write the transport cannot take
at once (paused) finishes in a task of its own, and until it has, the fast path
declines (messages queue, and the loop's ``emit`` waits for that write first), so
the bytes stay in order.

**Timers** are process-wide (``_Engine``): one heap of due times and one loop
timer for every open stream, instead of a timeout context and a timer handle per
waiting stream.  An idle stream's keepalive is written by that timer directly,
without waking the stream's task.

A coroutine that calls ``emit`` rather than a generator: it is held by every
idle connection.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from prometheus_client import Counter

from herald.journal.wire import KEEPALIVE
from herald.streams.hub import LiveMessage, Signal, Subscription

__all__ = ["DirectWriter", "Emit", "FastHandler", "LiveHandler", "Overflowed", "run_live"]

Emit = Callable[[bytes], Awaitable[None]]

# Most timers handled in one loop turn; the rest in the next (other work runs between).
_TIMERS_PER_TURN = 2000


class Overflowed(Exception):
    """The client fell so far behind that its live queue overflowed."""


class LiveHandler(Protocol):
    """What a stream does with live messages.  Each method returns the frames to send."""

    @property
    def ended(self) -> bool:
        """True once the stream is complete (a terminal event): the loop returns."""
        ...

    @property
    def delivered(self) -> int:
        """Events delivered so far (for the optional ``delivered`` counter)."""
        ...

    async def on_messages(self, items: list[LiveMessage]) -> bytes: ...

    async def on_resync(self) -> bytes:
        """The hub may have missed messages: re-read the journal after the positions."""
        ...

    def wake_at(self) -> float | None:
        """Loop time of the handler's own next timer, or None."""
        ...

    async def on_timer(self, now: float) -> bytes:
        """Called after every wake-up (the handler checks its own timers)."""
        ...


@runtime_checkable
class FastHandler(Protocol):
    def fast(self, message: LiveMessage, id_: bytes, tail: bytes) -> bytes | None:
        """The frame for ``message`` if it is simply the next one (and count it as
        delivered), else None with nothing changed.  Synchronous: no I/O."""
        ...


@runtime_checkable
class DirectWriter(Protocol):
    def ready(self) -> bool:
        """Whether ``write_now`` may be called: no write in flight, client still there."""
        ...

    def write_now(self, chunk: bytes) -> None:
        """Write without waiting; if the transport is paused the write completes in
        the background and ``ready`` is False until it has."""
        ...


class _Live:
    """One stream's state on the fast path and in the process-wide timers."""

    __slots__ = (
        "counted",
        "counter",
        "end",
        "fast",
        "handler",
        "keepalive_s",
        "out",
        "ping_at",
        "sub",
        "timer_at",
        "waiting",
        "writer",
    )

    def __init__(
        self,
        sub: Subscription,
        handler: LiveHandler,
        writer: DirectWriter | None,
        keepalive_s: float,
        end: float,
        counter: Counter | None,
    ) -> None:
        self.sub = sub
        self.handler = handler
        self.fast = (
            handler.fast if writer is not None and isinstance(handler, FastHandler) else None
        )
        self.writer = writer
        self.keepalive_s = keepalive_s
        self.end = end
        self.counter = counter
        self.counted = handler.delivered
        self.ping_at = 0.0
        self.out: list[bytes] | None = None  # fast-path frames not written yet
        self.timer_at: float | None = None  # the time this stream is in the heap for
        self.waiting = False

    # -- Direct (called by the hub) --------------------------------------------

    def push(self, message: LiveMessage, id_: bytes, tail: bytes) -> bool:
        out = self.out
        if out is None and not self.writer.ready():  # type: ignore[union-attr]
            return False
        frame = self.fast(message, id_, tail)  # type: ignore[misc]
        if frame is None:
            return False
        if out is None:
            self.out = [frame]
        else:
            out.append(frame)
        return True

    def send(self, message: LiveMessage, id_: bytes, tail: bytes) -> bool:
        """From the hub, a subscriber's only message of a burst: ``push`` and ``flush``
        in one, with nothing in between (no list, no join)."""
        writer = self.writer
        assert writer is not None
        if self.out is not None or not writer.ready():
            # Frames wait for the stream's task, or a write is in flight: the
            # general path keeps the bytes in order.
            if not self.push(message, id_, tail):
                return False
            self.flush()
            return True
        frame = self.fast(message, id_, tail)  # type: ignore[misc]
        if frame is None:
            return False
        writer.write_now(frame)
        engine = _current  # set by run_live, which made this stream
        assert engine is not None
        self.ping_at = engine.loop.time() + self.keepalive_s
        counter = self.counter
        if counter is not None:
            self.counted += 1  # ``fast`` delivered exactly one event
            engine.add(counter, 1)
        return True

    def flush(self) -> None:
        """From the hub, after this subscriber's messages of a burst: write them."""
        chunk = self.take_out()
        if chunk:
            engine = _current  # set by run_live, which made this stream
            assert engine is not None
            self.write(chunk, engine.loop.time())
            if self.counter is not None:
                engine.count(self)

    def take_out(self) -> bytes:
        out = self.out
        if out is None:
            return b""
        self.out = None
        return b"".join(out)

    def write(self, chunk: bytes, now: float) -> None:
        """From the engine: write fast-path frames (or a keepalive) now."""
        writer = self.writer
        assert writer is not None
        if not writer.ready():  # cannot happen while waiting, but never reorder bytes
            self.out = [chunk]
            self.sub.poke()
            return
        writer.write_now(chunk)
        self.ping_at = now + self.keepalive_s

    def count(self) -> int:
        n = self.handler.delivered - self.counted
        self.counted += n
        return n

    # -- timers ----------------------------------------------------------------

    def due(self) -> float:
        own = self.handler.wake_at()
        return min(self.ping_at, self.end, math.inf if own is None else own)

    def on_timer(self, now: float) -> None:
        if not self.waiting:
            return  # the task is running; it schedules again before it waits
        own = self.handler.wake_at()
        if now >= self.end or (own is not None and now >= own):
            self.sub.poke()
            return
        if now >= self.ping_at:
            if self.sub.direct is self and self.out is None and self.writer is not None:
                self.write(KEEPALIVE, now)
            else:
                self.sub.poke()
                return
        _engine().at(self, self.due())


class _Engine:
    """Process-wide: the timer heap and the fast path's delivery counts."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._heap: list[tuple[float, int, _Live]] = []
        self._seq = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._handle_at = math.inf
        self._counts: dict[Counter, int] = {}

    # -- delivery counts ---------------------------------------------------------

    def count(self, live: _Live) -> None:
        """Add a fast-path write's events to its counter (see ``add``)."""
        assert live.counter is not None
        self.add(live.counter, live.count())

    def add(self, counter: Counter, n: int) -> None:
        """Add ``n`` to ``counter`` once per counter and loop turn (an increment is a
        lock and a few dict lookups: not per delivery)."""
        counts = self._counts
        if not counts:
            self.loop.call_soon(self._apply_counts)
        counts[counter] = counts.get(counter, 0) + n

    def _apply_counts(self) -> None:
        counts, self._counts = self._counts, {}
        for counter, n in counts.items():
            counter.inc(n)

    # -- timers ----------------------------------------------------------------

    def at(self, live: _Live, when: float) -> None:
        if live.timer_at is not None and live.timer_at <= when:
            return  # an earlier entry stands; it re-schedules when it fires
        live.timer_at = when
        heapq.heappush(self._heap, (when, next(self._seq), live))
        if when < self._handle_at:
            self._arm(when)

    def cancel(self, live: _Live) -> None:
        live.timer_at = None  # its heap entries are skipped when they come up

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self.loop.call_at(when, self._fire)
        self._handle_at = when

    def _fire(self) -> None:
        self._handle, self._handle_at = None, math.inf
        heap, now = self._heap, self.loop.time()
        for _ in range(_TIMERS_PER_TURN):
            if not heap or heap[0][0] > now:
                break
            when, _, live = heapq.heappop(heap)
            if live.timer_at != when:
                continue  # stale: cancelled, or replaced by an earlier entry
            live.timer_at = None
            live.on_timer(now)
        while heap and heap[0][2].timer_at != heap[0][0]:
            heapq.heappop(heap)  # drop stale heads, so the loop timer is not armed for them
        if heap:
            self._arm(heap[0][0])  # in the past if this turn's share ran out: next turn


_current: _Engine | None = None


def _engine() -> _Engine:
    global _current
    loop = asyncio.get_running_loop()
    if _current is None or _current.loop is not loop:
        _current = _Engine(loop)
    return _current


async def run_live(
    sub: Subscription,
    emit: Emit,
    handler: LiveHandler,
    keepalive_s: float,
    until: float | None = None,
    delivered: Counter | None = None,
) -> None:
    """Stream until the handler ends, the subscription closes, or ``until`` passes
    (raises ``Overflowed`` when the hub overflowed the subscription's queue).
    ``delivered`` is incremented by the number of events written, once per chunk
    (fast-path writes: once per counter and event-loop turn)."""
    loop = asyncio.get_running_loop()
    engine = _engine()
    writer = getattr(emit, "__self__", None)
    live = _Live(
        sub,
        handler,
        writer if isinstance(writer, DirectWriter) else None,
        keepalive_s,
        math.inf if until is None else until,
        delivered,
    )
    live.ping_at = loop.time() + keepalive_s
    try:
        while not handler.ended:
            now = loop.time()
            if now >= live.end:
                return
            batch = sub.take_nowait()
            if not batch:
                due = live.due()
                if due > now:
                    engine.at(live, due)
                    live.waiting = True
                    if live.fast is not None:
                        sub.direct = live
                    try:
                        await sub.arrival()
                    finally:
                        sub.direct = None
                        live.waiting = False
                batch = sub.take_nowait()
            out: list[bytes] = [live.take_out()]
            run: list[LiveMessage] = []
            for item in batch:
                if not isinstance(item, Signal):
                    run.append(item)
                    continue
                if run:
                    out.append(await handler.on_messages(run))
                    run = []
                if item is Signal.RESYNC:
                    out.append(await handler.on_resync())
                    continue
                await _flush(emit, out, live)
                if item is Signal.CLOSE:
                    return
                raise Overflowed("live queue overflowed")
            if run:
                out.append(await handler.on_messages(run))
            now = loop.time()
            out.append(await handler.on_timer(now))
            if await _flush(emit, out, live):
                live.ping_at = now + keepalive_s
            elif now >= live.ping_at and now < live.end and not handler.ended:
                await emit(KEEPALIVE)
                live.ping_at = now + keepalive_s
    finally:
        sub.direct = None
        engine.cancel(live)
        # Frames the hub pushed but never written are dropped with the stream: the
        # client resumes from the cursor of the last frame it received.
        live.out = None


async def _flush(emit: Emit, out: list[bytes], live: _Live) -> bool:
    chunk = b"".join(out)
    if not chunk:
        return False
    await emit(chunk)
    if live.counter is not None:
        live.counter.inc(live.count())
    return True

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

A coroutine that calls ``emit`` rather than a generator: it is held by every
idle connection.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Protocol

from prometheus_client import Counter

from herald.journal.wire import KEEPALIVE
from herald.streams.hub import LiveMessage, Signal, Subscription

__all__ = ["Emit", "LiveHandler", "Overflowed", "run_live"]

Emit = Callable[[bytes], Awaitable[None]]


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
    ``delivered`` is incremented once per written chunk by its number of events."""
    loop = asyncio.get_running_loop()
    next_ping = loop.time() + keepalive_s
    end = math.inf if until is None else until
    while not handler.ended:
        now = loop.time()
        if now >= end:
            return
        batch = sub.take_nowait()
        if not batch:
            own = handler.wake_at()
            deadline = min(next_ping, end, math.inf if own is None else own)
            try:
                async with asyncio.timeout(max(0.0, deadline - now)):
                    await sub.arrival()
            except TimeoutError:
                pass
            batch = sub.take_nowait()
        before = handler.delivered
        out: list[bytes] = []
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
            await _flush(emit, out, handler, before, delivered)
            if item is Signal.CLOSE:
                return
            raise Overflowed("live queue overflowed")
        if run:
            out.append(await handler.on_messages(run))
        now = loop.time()
        out.append(await handler.on_timer(now))
        if await _flush(emit, out, handler, before, delivered):
            next_ping = now + keepalive_s
        elif now >= next_ping and now < end and not handler.ended:
            await emit(KEEPALIVE)
            next_ping = now + keepalive_s


async def _flush(
    emit: Emit, out: list[bytes], handler: LiveHandler, before: int, delivered: Counter | None
) -> bool:
    chunk = b"".join(out)
    if not chunk:
        return False
    await emit(chunk)
    if delivered is not None:
        delivered.inc(handler.delivered - before)
    return True

"""The live hub: one pub/sub connection per process, shared by every SSE client.

Subscriptions are reference-counted per channel: the first subscriber of a
channel subscribes it upstream, the last one to leave unsubscribes it.  Each
subscriber owns a small bounded queue of ``Live`` items:

* ``LiveMessage`` — one published envelope;
* ``RESYNC`` — the upstream connection was re-established: anything published
  meanwhile was missed live, so re-read the journal after your positions;
* ``OVERFLOW`` — your queue filled up (you are too slow); the queue was cleared to
  free its memory and no more messages will come: end the response;
* ``CLOSE`` — the process is shutting down: end the response now, so the client
  reconnects (to another process) from its cursor.

Ordering rule: ``subscribe`` returns only after the upstream server confirmed the
subscription, so a journal read started afterwards cannot miss a message that is
published between the read and the first live message.

The fast path (``Direct``): while a subscriber's own task is idle and in sync, it
hangs a ``Direct`` on its subscription, and the hub hands each message to it
instead of queueing it: the frame's bytes are shared, and no task wakes per
delivery.  ``Direct.push`` declines (returns False) whenever the subscriber's own
task has to look at the message (a hole, a new epoch, a paused transport); the
message is then queued as before.  A subscription with anything queued never
takes the fast path, so the order of deliveries is the order of publishes.

Bursts: the hub delivers the messages it has read but not yet delivered as one
burst (``Registry.deliver_in_steps``), subscriber by subscriber.  When it keeps up
a burst is one message; when it is behind, each subscriber's fast path gets all of
its pending messages at once and writes them as one chunk.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from herald.journal.positions import StreamId
from herald.journal.wire import FrameError, decode_frame, sse_event_tail

__all__ = [
    "CLOSE",
    "OVERFLOW",
    "RESYNC",
    "Direct",
    "Hub",
    "Live",
    "LiveMessage",
    "Registry",
    "Signal",
    "Subscribing",
    "Subscription",
    "parse_frame",
]


class Signal(enum.Enum):
    RESYNC = "resync"
    OVERFLOW = "overflow"
    CLOSE = "close"


RESYNC = Signal.RESYNC
OVERFLOW = Signal.OVERFLOW
CLOSE = Signal.CLOSE


@dataclass(frozen=True, slots=True)
class LiveMessage:
    channel: str
    epoch: str
    previous: StreamId | None
    id: StreamId
    envelope: bytes


Live = LiveMessage | Signal


def parse_frame(channel: str, frame: bytes) -> LiveMessage:
    """Decode a live frame (``herald.journal.wire``); ``FrameError`` if malformed.

    The id is read from the envelope's fixed head, so no JSON is parsed.
    """
    f = decode_frame(frame)
    try:
        previous = StreamId.from_bytes(f.previous) if f.previous else None
        id_ = StreamId.from_bytes(f.id)
    except ValueError as e:
        raise FrameError(f"live frame with a malformed id: {e}") from e
    return LiveMessage(channel, f.epoch.decode(), previous, id_, f.envelope)


class Direct(Protocol):
    """A subscriber's fast path, set on ``Subscription.direct`` while it may be used."""

    def push(self, message: LiveMessage, id_: bytes, tail: bytes) -> bool:
        """Deliver ``message`` now, or return False (nothing done) to have it queued.

        ``id_`` is the message's id as text and ``tail`` its SSE data field
        (``wire.sse_event_tail``), both encoded once for every subscriber."""
        ...

    def flush(self) -> None:
        """Write what ``push`` took: called once after the subscriber's messages of a
        burst, so they leave in one write."""
        ...

    def send(self, message: LiveMessage, id_: bytes, tail: bytes) -> bool:
        """``push`` and ``flush`` in one, for a subscriber's only message of a burst
        (the usual case: a hub that keeps up hands over one message at a time)."""
        ...


class Subscription:
    """One subscriber's view: its channels and its bounded queue.

    Not an ``asyncio.Queue``: with thousands of idle connections per process its
    three deques and an Event were the largest per-connection cost (~3 KiB). Here
    an idle subscription is an empty list and one pending future.
    """

    __slots__ = ("_items", "_waiter", "channels", "closed", "direct", "maxsize")

    def __init__(self, channels: tuple[str, ...], maxsize: int) -> None:
        self.channels = channels
        self.maxsize = maxsize
        self.closed = False  # overflowed or closed: nothing more is accepted
        self._items: list[Live] = []
        self._waiter: asyncio.Future[None] | None = None
        self.direct: Direct | None = None  # the fast path, while its owner allows it

    def offer(self, item: Live) -> None:
        """Called by the hub, never blocks.  A full queue turns into one OVERFLOW."""
        if self.closed:
            return
        if len(self._items) >= self.maxsize:
            self._end_with(OVERFLOW)
            return
        self._items.append(item)
        self._wake()

    def resync(self) -> None:
        # A resync makes everything queued so far redundant (the journal has it).
        if not self.closed:
            self._items = [RESYNC]
            self._wake()

    def close(self) -> None:
        if not self.closed:
            self._end_with(CLOSE)

    def _end_with(self, signal: Signal) -> None:
        # Dropping the queued items frees their memory at once.
        self.closed = True
        self._items = [signal]
        self._wake()

    def poke(self) -> None:
        """Wake the owner without queueing anything (its timer is due)."""
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._waiter = None

    def pending(self) -> int:
        return len(self._items)

    def take_nowait(self) -> list[Live]:
        """Everything queued, oldest first (possibly nothing)."""
        items, self._items = self._items, []
        return items

    def arrival(self) -> asyncio.Future[None]:
        """A future that completes when something is queued; await it when
        ``take_nowait`` returned nothing.  (No coroutine frame per idle subscriber.)"""
        waiter = self._waiter
        if waiter is None or waiter.done():
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            if self._items:
                waiter.set_result(None)
        return waiter

    async def take(self) -> list[Live]:
        """Everything queued, oldest first; waits while there is nothing."""
        while not self._items:
            await self.arrival()
        return self.take_nowait()


class Subscribing:
    """``async with hub.subscribe(...) as sub``: a plain class, not a generator-based
    context manager, because one is held open per connection for its lifetime."""

    __slots__ = ("_join", "_leave", "sub")

    def __init__(
        self,
        sub: Subscription,
        join: Callable[[Subscription], Awaitable[None]],
        leave: Callable[[Subscription], Awaitable[None]],
    ) -> None:
        self.sub, self._join, self._leave = sub, join, leave

    async def __aenter__(self) -> Subscription:
        await self._join(self.sub)
        return self.sub

    async def __aexit__(self, *exc_info: object) -> None:
        await self._leave(self.sub)


class Hub(Protocol):
    @property
    def connected(self) -> bool: ...

    @property
    def reconnects(self) -> int: ...

    def subscribe(self, channels: Sequence[str], maxsize: int) -> Subscribing:
        """Subscribe for the duration of the ``async with`` block (see module docs)."""
        ...

    def close_all(self) -> None:
        """End every subscription (CLOSE): the process is shutting down."""
        ...

    async def aclose(self) -> None: ...


class Registry:
    """Reference counts shared by the hub implementations: channel -> subscribers.

    A channel with one subscriber (every private user stream, usually) maps to
    that subscription itself; a set is made only for a second one.
    """

    def __init__(self) -> None:
        self.by_channel: dict[str, Subscription | set[Subscription]] = {}

    def add(self, sub: Subscription) -> list[str]:
        """Register; return the channels that had no subscriber before."""
        new = []
        for ch in sub.channels:
            held = self.by_channel.get(ch)
            if held is None:
                self.by_channel[ch] = sub
                new.append(ch)
            elif isinstance(held, set):
                held.add(sub)
            elif held is not sub:
                self.by_channel[ch] = {held, sub}
        return new

    def remove(self, sub: Subscription) -> list[str]:
        """Unregister; return the channels left with no subscriber."""
        empty = []
        for ch in sub.channels:
            held = self.by_channel.get(ch)
            if held is sub:
                del self.by_channel[ch]
                empty.append(ch)
            elif isinstance(held, set):
                held.discard(sub)
                if len(held) == 1:
                    self.by_channel[ch] = next(iter(held))
        return empty

    def subscribers(self, channel: str) -> tuple[Subscription, ...] | set[Subscription]:
        held = self.by_channel.get(channel)
        if held is None:
            return ()
        return held if isinstance(held, set) else (held,)

    def deliver(self, message: LiveMessage) -> None:
        for _ in self.deliver_in_steps([message], 1 << 62):
            pass

    def deliver_in_steps(self, burst: Sequence[LiveMessage], step: int) -> Iterator[int]:
        """Deliver a burst of messages (in the order they were published) to their
        subscribers, pausing (yielding the number of subscribers done so far) after
        every ``step`` of them, so the caller can let other work run.

        Subscriber by subscriber, not message by message: each subscriber is handed
        all of its messages of the burst before the next one is served, so a pause
        never falls between two of them, and its fast path writes them as one chunk
        (one write per subscriber per burst, however far behind the hub is).  A
        subscriber's messages keep the burst's order, across its channels too."""
        if not burst:
            return
        encoded: list[tuple[bytes, bytes] | None] = [None] * len(burst)
        channels = {m.channel for m in burst}
        done = 0
        if len(channels) == 1:
            subs = self.subscribers(burst[0].channel)
            if len(subs) >= step:
                # The set may change while the caller pauses, also after the last one.
                subs = tuple(subs)
            if len(burst) == 1:
                yield from _deliver_one(subs, burst[0], step)
                return
            every = range(len(burst))
            for sub in subs:
                _deliver_to(sub, burst, every, encoded)
                done += 1
                if done % step == 0:
                    yield done
            return
        seen: set[Subscription] = set()
        for channel in sorted(channels):
            for sub in tuple(self.subscribers(channel)):
                if sub in seen:
                    continue
                seen.add(sub)
                mine = sub.channels
                picked = [i for i, m in enumerate(burst) if m.channel in mine]
                _deliver_to(sub, burst, picked, encoded)
                done += 1
                if done % step == 0:
                    yield done

    def _all(self) -> set[Subscription]:
        return {sub for ch in self.by_channel for sub in self.subscribers(ch)}

    def resync_all(self) -> None:
        for sub in self._all():
            sub.resync()

    def close_all(self) -> None:
        for sub in self._all():
            sub.close()

    def __len__(self) -> int:
        return len(self.by_channel)


def _deliver_one(subs: Iterable[Subscription], message: LiveMessage, step: int) -> Iterator[int]:
    """``deliver_in_steps`` for a burst of one message on one channel, the usual
    case: the same as ``_deliver_to`` per subscriber, with the calls that only serve
    longer bursts left out (one ``send`` instead of ``push`` and ``flush``)."""
    id_ = str(message.id).encode()
    tail = sse_event_tail(message.envelope)
    for done, sub in enumerate(subs, 1):
        direct = sub.direct
        if direct is None or sub._items or not direct.send(message, id_, tail):
            sub.offer(message)
        if done % step == 0:
            yield done


def _deliver_to(
    sub: Subscription,
    burst: Sequence[LiveMessage],
    picked: Sequence[int],
    encoded: list[tuple[bytes, bytes] | None],
) -> None:
    """Hand ``sub`` the messages ``picked`` of the burst, in order: on its fast path
    while it takes them, queued from the first one it declines (so they stay in order)."""
    pushed: Direct | None = None
    for i in picked:
        message = burst[i]
        direct = sub.direct
        if direct is not None and not sub._items:
            pair = encoded[i]
            if pair is None:  # encoded once, only if some subscriber is on the fast path
                pair = encoded[i] = (str(message.id).encode(), sse_event_tail(message.envelope))
            if direct.push(message, pair[0], pair[1]):
                pushed = direct
                continue
        sub.offer(message)
    if pushed is not None:
        pushed.flush()

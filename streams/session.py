"""One SSE connection's delivery: resume from a cursor, then live, with no silent gap.

The order of operations is the whole point (DESIGN §4.2):

1. subscribe to every stream's live channel (the hub returns once Redis confirmed);
2. fix a starting position per stream: the cursor's, or the stream's newest entry;
3. replay each stream from the journal after its position, page by page;
4. stream live messages; each is classified against the position (see
   ``herald.streams.recovery``): the next one is delivered, a duplicate dropped, and a hole
   (or an epoch change, or a RESYNC from the hub) refills from the journal.

Everything the session sends is an SSE frame carrying the composite cursor as its
``id:``, so the client can resume from any frame, control frames included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from herald.journal.base import Entry, Journal
from herald.journal.envelope import format_time
from herald.journal.positions import ZERO_ID, StreamId, Target
from herald.journal.runtime.metrics import GAPS
from herald.journal.wire import KEEPALIVE, sse_frame
from herald.journal.wire import gap_envelope as wire_gap_envelope
from herald.streams.cursor import USER_KEY, Cursor, Position, item_prefix
from herald.streams.cursor import render as render_cursor
from herald.streams.hub import LiveMessage, Subscription
from herald.streams.live import Overflowed, run_live
from herald.streams.recovery import Gap, GapReason, Step, classify, position_after_gap

__all__ = ["PING", "Overflowed", "Session", "SessionLimits", "gap_envelope", "sse_frame"]

PING = KEEPALIVE  # the name the message reader and older callers import


@dataclass(frozen=True, slots=True)
class SessionLimits:
    replay_page: int = 1000
    max_replay_events: int = 100000


def gap_envelope(cursor: str, gap: Gap, extra: Mapping[str, object] | None = None) -> bytes:
    """A ``herald.gap`` control envelope (``wire.gap_envelope``) for ``gap``."""
    data = gap.to_data()
    if extra:
        data.update(extra)
    return wire_gap_envelope(gap.stream, data, format_time(datetime.now(UTC)))


# The fast path's cursor around one stream's item: (key, b"id: <items before>key~epoch~",
# b",<items after>", channel, epoch, b"id: <items before>").
_Parts = tuple[str, bytes, bytes, str, str | None, bytes]


class Session:
    """Positions per stream key, and the frames that move them forward."""

    # One per open stream: slots instead of a per-instance dict (~0.5 KiB each).
    __slots__ = (
        "_cursor",
        "_live_only",
        "_parts",
        "_pos",
        "_render",
        "_start",
        "_stop_at_limit",
        "delivered",
        "gap_log",
        "journal",
        "limits",
        "targets",
    )

    def __init__(
        self,
        journal: Journal,
        targets: Mapping[str, Target],
        start: Cursor | None,
        limits: SessionLimits,
        *,
        frame: Callable[[str, bytes], bytes] | None = None,
        stop_at_limit: bool = False,
    ) -> None:
        """``frame(cursor, envelope)`` renders one delivery (default: an SSE frame).
        ``stop_at_limit`` makes ``max_replay_events`` a page size (history) instead of
        a cap announced with a ``backlog_limit`` gap (SSE)."""
        self.journal = journal
        self.targets = dict(targets)
        self.limits = limits
        self._render = frame or sse_frame
        self._stop_at_limit = stop_at_limit
        self._start = start
        self._pos: dict[str, Position] = {}
        self._cursor: str | None = None  # rendered on demand, cached until a move
        self.delivered = 0
        self.gap_log: list[dict[str, object]] = []
        self._live_only: tuple[str, ...] = ()
        # The fast path's cursor around one stream's item (``_split_cursor``).
        self._parts: _Parts | None = None

    # -- positions and frames -------------------------------------------------

    def _set(self, key: str, pos: Position) -> None:
        self._pos[key] = pos
        self._cursor = None
        self._parts = None

    @property
    def cursor(self) -> str:
        if self._cursor is None:
            self._cursor = render_cursor(self._pos.items())
        return self._cursor

    def _frame(self, envelope: bytes) -> bytes:
        return self._render(self.cursor, envelope)

    def _gap(self, key: str, gap: Gap, resume: Position, **extra: object) -> bytes:
        self._set(key, resume)
        self.gap_log.append({**gap.to_data(), **extra})
        GAPS.labels(gap.reason.value).inc()
        return self._frame(gap_envelope(self.cursor, gap, extra))

    def _deliver(self, key: str, epoch: str, entry_id: StreamId, envelope: bytes) -> bytes:
        self._set(key, Position(epoch, entry_id))
        self.delivered += 1
        return self._frame(envelope)

    # -- phases ---------------------------------------------------------------

    def _given(self, key: str, from_start: bool) -> Position | None:
        """The starting position a request fixes: the cursor's, the beginning with
        ``from_start``, or None (start at the newest entry)."""
        given = self._start.get(key) if self._start is not None else None
        if given is None and from_start:
            return Position(None, ZERO_ID)
        return given

    async def has_backlog(self, *, from_start: bool = False) -> bool:
        """Whether a stream has something after its starting position (or lost its
        history), i.e. whether this session will replay — so a replay budget is
        charged only then.  ``from_start`` as for ``open``."""
        for key, target in self.targets.items():
            given = self._given(key, from_start)
            if given is None:
                continue
            page = await self.journal.read_after(target, given.id, limit=1)
            if page.entries or (given.epoch is not None and page.epoch != given.epoch):
                return True
        return False

    async def open(self, *, from_start: bool = False) -> None:
        """Fix starting positions; call after subscribing.  A stream missing from the
        cursor starts at its newest entry (live only), or at the beginning with
        ``from_start`` (history)."""
        for key, target in self.targets.items():
            given = self._given(key, from_start)
            if given is not None:
                self._set(key, given)
            else:
                # Starting at the newest entry: nothing to replay, anything newer
                # arrives live (we subscribed before looking).
                info = await self.journal.info(target)
                self._set(key, Position(info.epoch, info.last or ZERO_ID))
                self._live_only += (key,)
        self._start = None  # parsed once; not kept for the life of the stream

    async def replay(self) -> AsyncIterator[bytes]:
        """Everything after the starting positions, stream by stream, in pages."""
        budget = self.limits.max_replay_events
        for key in self.targets:
            if key in self._live_only:
                continue
            if budget <= 0 and self._stop_at_limit:
                return
            async for chunk, used in self._read_journal(key, budget):
                budget -= used
                if chunk:
                    yield chunk

    def live(
        self,
        sub: Subscription,
        emit: Callable[[bytes], Awaitable[None]],
        keepalive_s: float = 15.0,
        until: float | None = None,
        delivered: Counter | None = None,
    ) -> Coroutine[Any, Any, None]:
        """Emit live frames until the subscription is closed or the loop time ``until``
        (the token's expiry) passes, or its queue overflows (raises ``Overflowed``);
        a keepalive comment after each ``keepalive_s`` with nothing to send (see
        ``herald.streams.live.run_live``, shared with the message reader).  Returns
        that coroutine rather than awaiting it: one frame less per open stream."""
        self._prime()
        return run_live(sub, emit, self, keepalive_s, until, delivered)

    # -- LiveHandler ----------------------------------------------------------

    @property
    def ended(self) -> bool:
        return False  # a user stream never completes; it ends on close or expiry

    async def on_messages(self, items: list[LiveMessage]) -> bytes:
        out: list[bytes] = []
        for item in items:
            key = self._key_of(item.channel)
            step = classify(self._pos[key], item.epoch, item.id, item.previous)
            if step is Step.NEXT:
                out.append(self._deliver(key, item.epoch, item.id, item.envelope))
            elif step is not Step.DUPLICATE:
                # A hole or a new epoch: the journal has the truth.
                out += [c async for c, _ in self._read_journal(key, None)]
        return b"".join(out)

    async def on_resync(self) -> bytes:
        out: list[bytes] = []
        for key in self.targets:  # the hub may have missed messages
            out += [c async for c, _ in self._read_journal(key, None)]
        return b"".join(out)

    def wake_at(self) -> float | None:
        return None

    def fast(self, message: LiveMessage, id_: bytes, tail: bytes) -> bytes | None:
        """The fast path (``streams.live``): the frame of the next message of one
        stream, or None when the message needs ``classify`` (a hole, a duplicate, a
        new epoch).  Only this stream's item of the composite cursor changes, so the
        cursor around it is rendered once and kept until another stream moves: a
        connection that reads topics stays on the fast path too.

        Whatever ``classify`` calls the next message takes this path, also the first
        message of a stream that had none when the session opened (no previous id,
        no epoch yet): a new topic's first event would otherwise wake every
        subscriber's task at once."""
        if self._render is not sse_frame:
            return None
        parts = self._parts
        if parts is None or parts[3] != message.channel:
            parts = self._split_cursor(self._key_of(message.channel))
        key = parts[0]
        pos = self._pos[key]
        epoch = message.epoch
        if message.previous != pos.id or epoch != pos.epoch:
            if classify(pos, epoch, message.id, message.previous) is not Step.NEXT:
                return None
            if parts[4] != epoch:  # the stream's first event here, or a new epoch
                base = parts[5]
                head = base + item_prefix(key, epoch).encode()
                parts = (key, head, parts[2], parts[3], epoch, base)
        self._parts = parts
        self._pos[key] = Position(epoch, message.id)
        self._cursor = None
        self.delivered += 1
        return b"".join((parts[1], id_, parts[2], tail))  # one copy, not three

    def _split_cursor(self, key: str) -> _Parts:
        """The cursor around ``key``'s item, for the fast path (see ``_parts``)."""
        items = list(self._pos.items())
        k = [x for x, _ in items].index(key)
        before, after = render_cursor(items[:k]), render_cursor(items[k + 1 :])
        base = ("id: " + (before + "," if before else "")).encode()
        epoch = items[k][1].epoch
        head = base + item_prefix(key, epoch).encode()
        channel = self.targets[key].channel
        return key, head, ("," + after if after else "").encode(), channel, epoch, base

    def _prime(self) -> None:
        """Render the fast path's cursor parts before the first live message, for the
        last topic read (topics follow the caller's own stream).  A topic's event
        reaches all its readers in one burst: its first one would otherwise render
        each reader's cursor there.  A user stream has one reader: not worth the
        memory of every idle connection (~0.3 KiB)."""
        key = next(reversed(self._pos), USER_KEY)
        if self._render is sse_frame and key != USER_KEY:
            self._parts = self._split_cursor(key)

    async def on_timer(self, now: float) -> bytes:
        return b""

    def _key_of(self, channel: str) -> str:
        for key, target in self.targets.items():
            if target.channel == channel:
                return key
        raise KeyError(channel)

    @property
    def channels(self) -> list[str]:
        return [t.channel for t in self.targets.values()]

    async def _read_journal(self, key: str, budget: int | None) -> AsyncIterator[tuple[bytes, int]]:
        """Pages of one stream after its position: (frames, events delivered) per page.

        ``budget`` caps how many events are replayed before a ``backlog_limit`` gap
        skips to the newest entry (None: no cap, for refills of live holes).
        """
        target = self.targets[key]
        name = str(target)
        limit = self.limits.replay_page
        while True:
            last = self._pos[key]
            page = await self.journal.read_after(target, last.id, limit=limit)
            out: list[bytes] = []
            if page.epoch is None:
                if last.epoch is not None and not last.id.is_zero:
                    gap = Gap(name, last.id, None, GapReason.LOST)
                    out.append(self._gap(key, gap, Position(None, ZERO_ID)))
                yield b"".join(out), 0
                return
            if last.epoch is None:
                self._set(key, Position(page.epoch, last.id))  # first sight of the epoch
            elif page.epoch != last.epoch:
                fresh = await self.journal.read_after(target, ZERO_ID, limit=1)
                first = fresh.entries[0].id if fresh.entries else None
                gap = Gap(name, last.id, first, GapReason.LOST)
                out.append(self._gap(key, gap, Position(page.epoch, ZERO_ID)))
                yield b"".join(out), 0
                continue
            used, i, entries = 0, 0, page.entries
            while i < len(entries):
                entry = entries[i]
                if budget is not None and used >= budget:
                    if not self._stop_at_limit:
                        out.append(await self._skip_backlog(key, target, entry))
                    yield b"".join(out), used
                    return
                if entry.previous is not None and entry.previous == self._pos[key].id:
                    end = len(entries) if budget is None else min(len(entries), i + budget - used)
                    run = self._contiguous(key, page.epoch, entries, i, end, out)
                    used += run
                    i += run
                else:
                    before = self.delivered
                    out.append(self._journal_entry(key, page.epoch, entry))
                    used += self.delivered - before
                    i += 1
            if budget is not None:
                budget -= used
            yield b"".join(out), used
            if len(page.entries) < limit:
                return

    def _contiguous(
        self, key: str, epoch: str, entries: list[Entry], start: int, end: int, out: list[bytes]
    ) -> int:
        """Deliver ``entries[start:end]`` while each names the one before it as its
        previous — the common case of a replay, where ``classify`` can only say NEXT.
        Only this stream's part of the cursor changes, so the rest is rendered once,
        and the position is stored once at the end.  Returns how many it delivered."""
        items = list(self._pos.items())
        k = [x for x, _ in items].index(key)
        before, after = render_cursor(items[:k]), render_cursor(items[k + 1 :])
        head = (before + "," if before else "") + item_prefix(key, epoch)
        tail = "," + after if after else ""
        render, prev, i = self._render, self._pos[key].id, start
        while i < end:
            entry = entries[i]
            if entry.previous != prev:
                break
            out.append(render(f"{head}{entry.id}{tail}", entry.envelope))
            prev = entry.id
            i += 1
        self.delivered += i - start
        self._set(key, Position(epoch, prev))
        return i - start

    def _journal_entry(self, key: str, epoch: str, entry: Entry) -> bytes:
        step = classify(self._pos[key], epoch, entry.id, entry.previous)
        if step is Step.DUPLICATE:
            return b""
        frame = b""
        if step is Step.BEHIND:
            # The journal itself no longer has what came between: trimmed.
            last = self._pos[key]
            gap = Gap(str(self.targets[key]), last.id, entry.id, GapReason.TRIMMED)
            frame = self._gap(key, gap, position_after_gap(epoch, entry.previous))
        return frame + self._deliver(key, epoch, entry.id, entry.envelope)

    async def _skip_backlog(self, key: str, target: Target, next_entry: Entry) -> bytes:
        info = await self.journal.info(target)
        last = self._pos[key]
        newest = info.last or last.id
        gap = Gap(str(target), last.id, next_entry.id, GapReason.BACKLOG_LIMIT)
        return self._gap(key, gap, Position(last.epoch, newest), skipped_to=str(newest))

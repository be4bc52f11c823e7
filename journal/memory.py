"""The journal in one process's memory: same contract as Redis, for tests and demos.

Live subscribers are plain callbacks receiving ``(target, epoch, previous, envelope)``
exactly as the Redis implementation publishes them.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from herald.journal.base import (
    Entry,
    JournalLimits,
    Page,
    PublishRequest,
    PublishResult,
    StreamInfo,
    new_epoch,
    prepare_requests,
)
from herald.journal.positions import StreamId, Target
from herald.journal.runtime.metrics import count_published

__all__ = ["LiveCallback", "MemoryJournal"]

LiveCallback = Callable[[Target, str, StreamId | None, bytes], None]


@dataclass(slots=True)
class _Stream:
    epoch: str
    entries: list[Entry] = field(default_factory=list)
    last: StreamId | None = None


class MemoryJournal:
    """Journal held in a dict; every call completes synchronously, so it is atomic."""

    def __init__(
        self, limits: JournalLimits | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.limits = limits or JournalLimits()
        self._clock = clock
        self._streams: dict[Target, _Stream] = {}
        self._idempotency: dict[tuple[Target, str], tuple[StreamId, float]] = {}
        self.listeners: list[LiveCallback] = []

    def _next_id(self, last: StreamId | None) -> StreamId:
        now = int(self._clock() * 1000)
        if last is None or now > last.ms:
            return StreamId(now, 0)
        return StreamId(last.ms, last.seq + 1)

    async def publish(
        self,
        target: Target,
        type_: str,
        data: dict[str, Any],
        *,
        source: str | None = None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        req = PublishRequest(target, type_, data, source, idempotency_key)
        return (await self.publish_many([req]))[0]

    async def publish_many(self, requests: Sequence[PublishRequest]) -> list[PublishResult]:
        prepared = prepare_requests(self.limits, requests)
        results = [self._append(r, p) for r, p in zip(requests, prepared, strict=True)]
        count_published(q.type for q, r in zip(requests, results, strict=True) if not r.duplicate)
        return results

    def _append(self, req: PublishRequest, prepared: Any) -> PublishResult:
        stream = self._streams.setdefault(req.target, _Stream(epoch=new_epoch()))
        now = self._clock()
        if req.idempotency_key is not None:
            seen = self._idempotency.get((req.target, req.idempotency_key))
            if seen is not None and seen[1] > now:
                return PublishResult(seen[0], req.target, None, True, stream.epoch)
        previous = stream.last
        id_ = self._next_id(previous)
        entry = Entry(id_, previous, prepared.type, prepared.with_id(str(id_)))
        stream.entries.append(entry)
        stream.last = id_
        # Trim like MAXLEN ~: keep at least maxlen, drop in chunks to stay cheap.
        excess = len(stream.entries) - self.limits.stream_maxlen
        if excess >= max(1, self.limits.stream_maxlen // 10):
            del stream.entries[:excess]
        if req.idempotency_key is not None:
            expiry = now + self.limits.idempotency_window_s
            self._idempotency[(req.target, req.idempotency_key)] = (id_, expiry)
        for listener in list(self.listeners):
            listener(req.target, stream.epoch, previous, entry.envelope)
        return PublishResult(id_, req.target, previous, False, stream.epoch)

    async def read_after(self, target: Target, after: StreamId, *, limit: int) -> Page:
        stream = self._streams.get(target)
        if stream is None:
            return Page(None, [])
        start = bisect.bisect_right(stream.entries, after, key=lambda e: e.id)
        return Page(stream.epoch, stream.entries[start : start + limit])

    async def latest(
        self, target: Target, type_prefix: str, *, max_scan: int = 10000
    ) -> Entry | None:
        stream = self._streams.get(target)
        if stream is None:
            return None
        for entry in reversed(stream.entries[-max_scan:]):
            if entry.type.startswith(type_prefix):
                return entry
        return None

    async def info(self, target: Target) -> StreamInfo:
        stream = self._streams.get(target)
        if stream is None:
            return StreamInfo(None, None, None, 0)
        first = stream.entries[0].id if stream.entries else None
        return StreamInfo(stream.epoch, stream.last, first, len(stream.entries))

    async def aclose(self) -> None:
        self._streams.clear()

    def lose(self, target: Target) -> None:
        """Forget a stream entirely, as a Redis restart without persistence would."""
        self._streams.pop(target, None)

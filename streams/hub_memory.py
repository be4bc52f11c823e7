"""The hub for the in-process journal: the journal calls us synchronously on publish."""

from __future__ import annotations

from collections.abc import Sequence

from herald.journal.memory import MemoryJournal
from herald.journal.positions import StreamId, Target
from herald.journal.wire import envelope_id
from herald.streams.hub import LiveMessage, Registry, Subscribing, Subscription

__all__ = ["MemoryHub"]


class MemoryHub:
    def __init__(self, journal: MemoryJournal) -> None:
        self._registry = Registry()
        journal.listeners.append(self._on_publish)

    @property
    def connected(self) -> bool:
        return True

    @property
    def reconnects(self) -> int:
        return 0

    def _on_publish(
        self, target: Target, epoch: str, previous: StreamId | None, envelope: bytes
    ) -> None:
        id_ = StreamId.from_bytes(envelope_id(envelope))
        self._registry.deliver(LiveMessage(target.channel, epoch, previous, id_, envelope))

    def subscribe(self, channels: Sequence[str], maxsize: int) -> Subscribing:
        return Subscribing(Subscription(tuple(channels), maxsize), self._join, self._leave)

    async def _join(self, sub: Subscription) -> None:
        self._registry.add(sub)

    async def _leave(self, sub: Subscription) -> None:
        self._registry.remove(sub)

    def resync_all(self) -> None:
        """Act as if the upstream connection had dropped and come back (for tests)."""
        self._registry.resync_all()

    def close_all(self) -> None:
        self._registry.close_all()

    async def aclose(self) -> None:
        return None

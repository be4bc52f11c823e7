"""Recovery rules as pure functions: no I/O, tested with tables (see tests/unit).

Every journal entry records the id of the entry before it, and every stream has
an epoch that changes when its history is lost.  So for a reader positioned at
``last``, the next entry it sees tells exactly what happened in between:

* same epoch, ``previous`` ≤ ``last.id`` (or no previous at all): contiguous;
* same epoch, ``previous`` > ``last.id``: entries in between exist(ed) that the
  reader has not seen — from the live channel that is a *hole* (refill from the
  journal); from the journal it means they were *trimmed*;
* another epoch: the history the reader was positioned in is *lost*.

A ``herald.gap`` is emitted only for trimmed, lost and backlog-limit outcomes,
never for a contiguous step.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from herald.journal.positions import ZERO_ID, StreamId
from herald.streams.cursor import Position

__all__ = ["Gap", "GapReason", "Step", "classify", "position_after_gap"]


class Step(enum.Enum):
    NEXT = "next"  # deliver it
    DUPLICATE = "duplicate"  # already delivered: drop it
    BEHIND = "behind"  # something between last and this entry is missing here
    LOST = "lost"  # the stream's history was replaced (new epoch)


class GapReason(enum.StrEnum):
    TRIMMED = "trimmed"
    LOST = "lost"
    BACKLOG_LIMIT = "backlog_limit"


@dataclass(frozen=True, slots=True)
class Gap:
    """What a ``herald.gap`` envelope states: after ``after``, events up to (not including)
    ``first_available`` may be missing from stream ``stream``."""

    stream: str
    after: StreamId
    first_available: StreamId | None
    reason: GapReason

    def to_data(self) -> dict[str, object]:
        return {
            "stream": self.stream,
            "after": str(self.after),
            "first_available": str(self.first_available) if self.first_available else None,
            "reason": self.reason.value,
        }


def classify(last: Position, epoch: str, entry_id: StreamId, previous: StreamId | None) -> Step:
    """Where an entry (from the journal or the live channel) stands relative to ``last``."""
    if last.epoch is not None and epoch != last.epoch:
        return Step.LOST
    if entry_id <= last.id:
        return Step.DUPLICATE
    if previous is None or previous <= last.id:
        # No predecessor at all, or the predecessor is what we delivered (or, for a
        # hand-written cursor, before it): nothing is missing.
        return Step.NEXT
    return Step.BEHIND


def position_after_gap(epoch: str | None, first_available_previous: StreamId | None) -> Position:
    """Where to stand after announcing a gap, so that resuming from the gap's cursor
    does not announce it again: just before the first available entry."""
    return Position(epoch, first_available_previous or ZERO_ID)

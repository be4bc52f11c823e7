"""Cursors: where a client is in each stream it reads, as an opaque SSE ``id:``.

A ``Position`` is a stream epoch plus an entry id (centrifuge's StreamPosition).
The epoch changes when a stream's history is lost (its metadata is created
anew), so a reconnecting client can be told "lost" instead of silently being
served a new stream as if it were the old one.

A connection reads the caller's user stream (key ``u``) and any topics
(key ``t:<name>``), so its cursor is a composite::

    u~5f1c0a9e2b7d~1795372301038-0,t:printers~d7a02870b613~1795372301427-0

Items are joined by ``,`` and fields by ``~``; neither can occur in a name, an
epoch or an id.  A plain ``<ms>-<seq>`` is also accepted, as the user stream's
position with no epoch (hand-written cursors, other SSE clients).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from herald.journal.positions import NAME_RE, ZERO_ID, CursorError, StreamId, Target

__all__ = ["USER_KEY", "Cursor", "Position", "item_prefix", "key_of", "render"]

USER_KEY = "u"
_EPOCH_RE = re.compile(r"^[0-9a-f]{1,32}$")
_MAX_ITEMS = 64


def key_of(target: Target) -> str:
    """The cursor key of a stream: ``u`` for the caller's own stream, ``t:<name>`` for a topic."""
    return USER_KEY if target.kind == "u" else f"t:{target.name}"


class Position(NamedTuple):
    """A point in one stream: after entry ``id`` of epoch ``epoch`` (None: not known yet).
    A named tuple, not a frozen dataclass: the fast path makes one per delivery, and
    a tuple is made in a third of the time."""

    epoch: str | None
    id: StreamId = ZERO_ID


@dataclass(frozen=True, slots=True)
class Cursor:
    """Positions by stream key.  ``str(cursor)`` and ``Cursor.parse`` round-trip."""

    positions: Mapping[str, Position]

    @classmethod
    def parse(cls, text: str) -> Cursor:
        text = text.strip()
        if not text:
            raise CursorError("empty cursor")
        if "~" not in text:
            return cls({USER_KEY: Position(None, StreamId.parse(text))})
        items = text.split(",")
        if len(items) > _MAX_ITEMS:
            raise CursorError(f"cursor has more than {_MAX_ITEMS} streams")
        positions: dict[str, Position] = {}
        for item in items:
            parts = item.split("~")
            if len(parts) != 3:
                raise CursorError(f"malformed cursor item {item!r}: expected key~epoch~id")
            key, epoch, id_text = parts
            if key != USER_KEY and not (key.startswith("t:") and NAME_RE.fullmatch(key[2:])):
                raise CursorError(f"malformed cursor key {key!r}: expected 'u' or 't:<topic>'")
            if epoch and not _EPOCH_RE.fullmatch(epoch):
                raise CursorError(f"malformed epoch {epoch!r} in cursor")
            if key in positions:
                raise CursorError(f"stream {key!r} appears twice in the cursor")
            positions[key] = Position(epoch or None, StreamId.parse(id_text))
        return cls(positions)

    def __str__(self) -> str:
        return render(self.positions.items())

    def get(self, key: str) -> Position | None:
        return self.positions.get(key)


def item_prefix(key: str, epoch: str | None) -> str:
    """One cursor item is ``item_prefix(key, epoch) + str(id)``."""
    return f"{key}~{epoch or ''}~"


def render(items: Iterable[tuple[str, Position]]) -> str:
    return ",".join(item_prefix(key, pos.epoch) + str(pos.id) for key, pos in items)

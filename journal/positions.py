"""Positions in a stream and the names of streams, as small values.

``StreamId`` is a Redis Stream entry id (``<ms>-<seq>``), ordered as Redis orders
them.  ``Target`` names a private user stream or a shared topic and derives every
Redis key from one hash tag, so a stream, its metadata, its idempotency keys and
its live channel share a Redis Cluster slot and one Lua script may touch them all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from herald.journal import keys

__all__ = ["NAME_RE", "ZERO_ID", "CursorError", "StreamId", "Target"]

# No braces (they would break the hash tag), no whitespace or control characters.
NAME_RE = re.compile(r"^[A-Za-z0-9_.@|:+=-]{1,200}$")
_ID_RE = re.compile(r"^(\d{1,20})-(\d{1,20})$")
_U64_MAX = 2**64 - 1


class CursorError(ValueError):
    """A cursor or stream id could not be parsed; the message quotes it."""


@dataclass(frozen=True, slots=True, order=True)
class StreamId:
    """A Redis Stream entry id. ``ZERO_ID`` (``0-0``) is "before everything"."""

    ms: int
    seq: int

    @classmethod
    def parse(cls, text: str) -> StreamId:
        m = _ID_RE.fullmatch(text)
        if m is None:
            raise CursorError(f"malformed stream id {text!r}: expected '<ms>-<seq>'")
        ms, seq = int(m.group(1)), int(m.group(2))
        if ms > _U64_MAX or seq > _U64_MAX:
            raise CursorError(f"stream id {text!r} is out of range (parts are 64-bit)")
        return cls(ms, seq)

    @classmethod
    def from_bytes(cls, raw: bytes) -> StreamId:
        """For ids Herald's own script wrote: split, not regex-validated (hot paths)."""
        ms, _, seq = raw.partition(b"-")
        # A chat message's sequence number has no "-": it is read as (n, 0).
        return cls(int(ms), int(seq) if seq else 0)

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"

    @property
    def is_zero(self) -> bool:
        return self.ms == 0 and self.seq == 0

    @property
    def is_max(self) -> bool:
        """Nothing can come after it (Redis refuses a range starting past it)."""
        return self.ms == _U64_MAX and self.seq == _U64_MAX


ZERO_ID = StreamId(0, 0)


@dataclass(frozen=True, slots=True)
class Target:
    """A stream to publish to: ``Target.user("42")`` or ``Target.topic("printers")``."""

    kind: Literal["u", "t"]
    name: str

    def __post_init__(self) -> None:
        if self.kind not in ("u", "t"):
            raise ValueError(f"unknown target kind {self.kind!r}")
        if not NAME_RE.fullmatch(self.name):
            what = "user id" if self.kind == "u" else "topic name"
            raise ValueError(f"{what} {self.name!r} must match {NAME_RE.pattern}")

    @classmethod
    def user(cls, user_id: str) -> Target:
        return cls("u", user_id)

    @classmethod
    def topic(cls, name: str) -> Target:
        return cls("t", name)

    # The key names themselves live in herald.journal.keys.
    @property
    def tag(self) -> str:
        return keys.hash_tag(self.kind, self.name)

    @property
    def channel(self) -> str:
        """Live pub/sub channel; also the stream's public name in API responses."""
        return keys.channel(self.tag)

    @property
    def stream_key(self) -> str:
        return keys.stream_key(self.tag)

    @property
    def meta_key(self) -> str:
        return keys.meta_key(self.tag)

    def idempotency_key(self, key: str) -> str:
        return keys.idempotency_key(self.tag, key)

    def __str__(self) -> str:
        return f"{'user' if self.kind == 'u' else 'topic'}:{self.name}"

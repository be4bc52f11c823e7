"""The record: envelopes, stream positions and the journal that keeps and publishes them.

The interface is ``Journal`` (``base``) with two implementations, ``MemoryJournal``
(one process) and ``RedisJournal`` (Redis Streams + pub/sub).  By role, sub-packages
hold chat messages (``messages``), the task queue (``tasks``), MCP OAuth (``oauth``),
process runtime (``runtime``) and upload formats (``sources``).  Each area names its
Redis keys in its own ``keys`` module (here: the record's).

The names below are imported on first use, so importing the package (or one of its
modules) costs no more than that module."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from herald.journal.base import (
        Entry,
        Journal,
        JournalError,
        JournalLimits,
        JournalUnavailable,
        Page,
        PublishOutcome,
        PublishRequest,
        PublishResult,
        StreamInfo,
        try_publish,
    )
    from herald.journal.envelope import (
        Envelope,
        EnvelopeError,
        EnvelopeTooLarge,
        InvalidEnvelope,
        decode,
        format_time,
    )
    from herald.journal.memory import MemoryJournal
    from herald.journal.positions import NAME_RE, ZERO_ID, CursorError, StreamId, Target
    from herald.journal.redis import RedisJournal

__all__ = [
    "NAME_RE",
    "ZERO_ID",
    "CursorError",
    "Entry",
    "Envelope",
    "EnvelopeError",
    "EnvelopeTooLarge",
    "InvalidEnvelope",
    "Journal",
    "JournalError",
    "JournalLimits",
    "JournalUnavailable",
    "MemoryJournal",
    "Page",
    "PublishOutcome",
    "PublishRequest",
    "PublishResult",
    "RedisJournal",
    "StreamId",
    "StreamInfo",
    "Target",
    "decode",
    "format_time",
    "try_publish",
]

# Where each name lives, imported on first use.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "base": (
        "Entry",
        "Journal",
        "JournalError",
        "JournalLimits",
        "JournalUnavailable",
        "Page",
        "PublishOutcome",
        "PublishRequest",
        "PublishResult",
        "StreamInfo",
        "try_publish",
    ),
    "envelope": (
        "Envelope",
        "EnvelopeError",
        "EnvelopeTooLarge",
        "InvalidEnvelope",
        "decode",
        "format_time",
    ),
    "memory": ("MemoryJournal",),
    "positions": ("NAME_RE", "ZERO_ID", "CursorError", "StreamId", "Target"),
    "redis": ("RedisJournal",),
}
_HOMES = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

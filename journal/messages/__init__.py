"""Chat message streams: the producer, the batched PostgreSQL writer and the store.

The names below are imported on first use, so importing the package (or one of its
modules) costs no more than that module."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from herald.journal.messages.producer import MessageStream, MessageStreams, connect
    from herald.journal.messages.store import (
        EVENT_TYPE_RE,
        MESSAGE_SOURCE,
        TERMINAL_TYPES,
        CleanupResult,
        MessageInfo,
        MessageNotFound,
        MessageOwnedElsewhere,
        StoredEvent,
        cleanup_message_events,
        create_message,
        get_message,
        parse_message_id,
        read_events,
        read_last_seq,
        set_status,
    )
    from herald.journal.messages.writer import MessageWriter, Row, WriterOverloaded

__all__ = [
    "EVENT_TYPE_RE",
    "MESSAGE_SOURCE",
    "TERMINAL_TYPES",
    "CleanupResult",
    "MessageInfo",
    "MessageNotFound",
    "MessageOwnedElsewhere",
    "MessageStream",
    "MessageStreams",
    "MessageWriter",
    "Row",
    "StoredEvent",
    "WriterOverloaded",
    "cleanup_message_events",
    "connect",
    "create_message",
    "get_message",
    "parse_message_id",
    "read_events",
    "read_last_seq",
    "set_status",
]

# Where each name lives, imported on first use.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "producer": ("MessageStream", "MessageStreams", "connect"),
    "store": (
        "EVENT_TYPE_RE",
        "MESSAGE_SOURCE",
        "TERMINAL_TYPES",
        "CleanupResult",
        "MessageInfo",
        "MessageNotFound",
        "MessageOwnedElsewhere",
        "StoredEvent",
        "cleanup_message_events",
        "create_message",
        "get_message",
        "parse_message_id",
        "read_events",
        "read_last_seq",
        "set_status",
    ),
    "writer": ("MessageWriter", "Row", "WriterOverloaded"),
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

"""Herald: durable, replayable, live events.

The public Python API::

    from herald import connect

    async with connect() as herald:
        await herald.publish("source.ingest.progress", {"current": 1}, user="alice")

Importing ``herald`` loads nothing else: each name below is imported on first use,
so ``import herald.journal…`` and the ``herald`` command stay light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from herald.client import Herald, MessagesUnavailable, NotConnected, connect, event
    from herald.journal.base import JournalUnavailable, PublishRequest, PublishResult
    from herald.journal.envelope import EnvelopeTooLarge, InvalidEnvelope
    from herald.journal.messages.producer import MessageStream
    from herald.journal.messages.writer import WriterOverloaded
    from herald.journal.positions import Target
    from herald.journal.runtime.db import DatabaseUnavailable
    from herald.journal.runtime.discovery import NotRunning
    from herald.journal.runtime.settings import Settings, SettingsError
    from herald.journal.tasks.entries import InvalidTask, TaskQueueUnavailable, TaskTooLarge

__all__ = [
    "DatabaseUnavailable",
    "EnvelopeTooLarge",
    "Herald",
    "InvalidEnvelope",
    "InvalidTask",
    "JournalUnavailable",
    "MessageStream",
    "MessagesUnavailable",
    "NotConnected",
    "NotRunning",
    "PublishRequest",
    "PublishResult",
    "Settings",
    "SettingsError",
    "Target",
    "TaskQueueUnavailable",
    "TaskTooLarge",
    "WriterOverloaded",
    "connect",
    "event",
]

_HOMES = {
    "Herald": "herald.client",
    "MessagesUnavailable": "herald.client",
    "NotConnected": "herald.client",
    "connect": "herald.client",
    "event": "herald.client",
    "JournalUnavailable": "herald.journal.base",
    "PublishRequest": "herald.journal.base",
    "PublishResult": "herald.journal.base",
    "EnvelopeTooLarge": "herald.journal.envelope",
    "InvalidEnvelope": "herald.journal.envelope",
    "MessageStream": "herald.journal.messages.producer",
    "WriterOverloaded": "herald.journal.messages.writer",
    "Target": "herald.journal.positions",
    "DatabaseUnavailable": "herald.journal.runtime.db",
    "NotRunning": "herald.journal.runtime.discovery",
    "Settings": "herald.journal.runtime.settings",
    "SettingsError": "herald.journal.runtime.settings",
    "InvalidTask": "herald.journal.tasks.entries",
    "TaskQueueUnavailable": "herald.journal.tasks.entries",
    "TaskTooLarge": "herald.journal.tasks.entries",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'herald' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

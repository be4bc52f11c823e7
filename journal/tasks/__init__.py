"""The task queue on Redis Streams: what producers enqueue and the moves a worker makes.

The names below are imported on first use, so importing the package (or one of its
modules) costs no more than that module."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from herald.journal.tasks.queue import (
        GROUP,
        KIND_RE,
        MAX_TASK_BYTES,
        InvalidTask,
        QueuedTask,
        StatusUpdate,
        TaskQueue,
        TaskQueueError,
        TaskQueueUnavailable,
        TaskTooLarge,
        public_status,
    )

__all__ = [
    "GROUP",
    "KIND_RE",
    "MAX_TASK_BYTES",
    "InvalidTask",
    "QueuedTask",
    "StatusUpdate",
    "TaskQueue",
    "TaskQueueError",
    "TaskQueueUnavailable",
    "TaskTooLarge",
    "public_status",
]

# Where each name lives, imported on first use.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "queue": (
        "GROUP",
        "KIND_RE",
        "MAX_TASK_BYTES",
        "InvalidTask",
        "QueuedTask",
        "StatusUpdate",
        "TaskQueue",
        "TaskQueueError",
        "TaskQueueUnavailable",
        "TaskTooLarge",
        "public_status",
    ),
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

"""Live delivery: the per-process hub, the user-stream session and the message reader,
cursors, the recovery merge, budgets and caps.

The names below are imported on first use, so importing the package (or one of its
modules) costs no more than that module."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from herald.streams.budget import BudgetLimits, Budgets, LeaseKeeper, MemoryBudgets
    from herald.streams.budget_redis import RedisBudgets
    from herald.streams.cursor import Cursor, Position
    from herald.streams.hub import Hub, Live, LiveMessage, Subscription
    from herald.streams.hub_memory import MemoryHub
    from herald.streams.hub_redis import HubUnavailable, RedisHub
    from herald.streams.message_reader import MessageReader, ReaderLimits
    from herald.streams.recovery import Gap, GapReason
    from herald.streams.session import Overflowed, Session, SessionLimits

__all__ = [
    "BudgetLimits",
    "Budgets",
    "Cursor",
    "Gap",
    "GapReason",
    "Hub",
    "HubUnavailable",
    "LeaseKeeper",
    "Live",
    "LiveMessage",
    "MemoryBudgets",
    "MemoryHub",
    "MessageReader",
    "Overflowed",
    "Position",
    "ReaderLimits",
    "RedisBudgets",
    "RedisHub",
    "Session",
    "SessionLimits",
    "Subscription",
]

# Where each name lives, imported on first use.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "budget": ("BudgetLimits", "Budgets", "LeaseKeeper", "MemoryBudgets"),
    "budget_redis": ("RedisBudgets",),
    "cursor": ("Cursor", "Position"),
    "hub": ("Hub", "Live", "LiveMessage", "Subscription"),
    "hub_memory": ("MemoryHub",),
    "hub_redis": ("HubUnavailable", "RedisHub"),
    "message_reader": ("MessageReader", "ReaderLimits"),
    "recovery": ("Gap", "GapReason"),
    "session": ("Overflowed", "Session", "SessionLimits"),
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

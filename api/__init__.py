"""The HTTP API: the Starlette application, authentication and SSE tickets.

The names below are imported on first use, so importing the package (or one of its
modules) costs no more than that module."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from herald.api.app import Herald, create_app
    from herald.api.auth import Authenticator, AuthError, Principal, load_or_create_secret
    from herald.api.state import AppState, open_state
    from herald.api.tail import Tail
    from herald.api.tickets import MemoryTicketStore, RedisTicketStore, TicketStore

__all__ = [
    "AppState",
    "AuthError",
    "Authenticator",
    "Herald",
    "MemoryTicketStore",
    "Principal",
    "RedisTicketStore",
    "Tail",
    "TicketStore",
    "create_app",
    "load_or_create_secret",
    "open_state",
]

# Where each name lives, imported on first use.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "app": ("Herald", "create_app"),
    "auth": ("AuthError", "Authenticator", "Principal", "load_or_create_secret"),
    "state": ("AppState", "open_state"),
    "tail": ("Tail",),
    "tickets": ("MemoryTicketStore", "RedisTicketStore", "TicketStore"),
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

"""Process runtime: settings, Redis and database clients, embedded servers, metrics.

The names below are imported on first use, so importing the package (or one of its
modules) costs no more than that module."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from herald.journal.runtime.clients import make_journal, make_redis
    from herald.journal.runtime.db import DatabaseUnavailable, make_engine, run_in_transaction
    from herald.journal.runtime.embedded import EmbeddedError, EmbeddedServices
    from herald.journal.runtime.settings import Settings, SettingsError

__all__ = [
    "DatabaseUnavailable",
    "EmbeddedError",
    "EmbeddedServices",
    "Settings",
    "SettingsError",
    "make_engine",
    "make_journal",
    "make_redis",
    "run_in_transaction",
]

# Where each name lives, imported on first use.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "clients": ("make_journal", "make_redis"),
    "db": ("DatabaseUnavailable", "make_engine", "run_in_transaction"),
    "embedded": ("EmbeddedError", "EmbeddedServices"),
    "settings": ("Settings", "SettingsError"),
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

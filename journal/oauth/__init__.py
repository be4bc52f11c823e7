"""MCP OAuth: pending authorizations, stored token sets and the box that seals them.

The names below are imported on first use, so importing the package (or one of its
modules) costs no more than that module."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from herald.journal.oauth.pending import (
        PendingAuthorization,
        PendingAuthorizations,
        UnsafeUrl,
        check_url,
        new_state,
    )
    from herald.journal.oauth.secretbox import (
        KeyUnavailable,
        SecretBox,
        SecretBoxError,
        secretbox_for,
    )
    from herald.journal.oauth.tokens import StoredTokenSet, load_token_set, save_token_set

__all__ = [
    "KeyUnavailable",
    "PendingAuthorization",
    "PendingAuthorizations",
    "SecretBox",
    "SecretBoxError",
    "StoredTokenSet",
    "UnsafeUrl",
    "check_url",
    "load_token_set",
    "new_state",
    "save_token_set",
    "secretbox_for",
]

# Where each name lives, imported on first use.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "pending": (
        "PendingAuthorization",
        "PendingAuthorizations",
        "UnsafeUrl",
        "check_url",
        "new_state",
    ),
    "secretbox": ("KeyUnavailable", "SecretBox", "SecretBoxError", "secretbox_for"),
    "tokens": ("StoredTokenSet", "load_token_set", "save_token_set"),
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

"""Redis key names of MCP OAuth.

A pending authorization is stored under the SHA-256 of its ``state``, never the state
itself, so key listings and slow logs do not show a usable credential.  The strings
are stored data: changing one loses the authorizations in flight.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["PENDING_PREFIX", "pending_key"]

PENDING_PREFIX: Final = "herald:oauth:state:"


def pending_key(state: str) -> str:
    """The record of the authorization that put ``state`` in its URL."""
    return PENDING_PREFIX + hashlib.sha256(state.encode()).hexdigest()

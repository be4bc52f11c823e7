"""Redis key names of the API: single-use SSE tickets and the stream sessions that let
a spent ticket's EventSource reconnect.

A session is stored under the SHA-256 of its ticket, never the ticket itself, so key
listings and slow logs do not show a usable credential.  The strings are shared by
every process: changing one invalidates the tickets and sessions in flight.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["SSE_SESSION_PREFIX", "TICKET_PREFIX", "sse_session_key", "ticket_key"]

TICKET_PREFIX: Final = "herald:ticket:"
SSE_SESSION_PREFIX: Final = "herald:sse-session:"


def ticket_key(ticket: str) -> str:
    """The claims a ticket stands for, until it is redeemed or expires."""
    return TICKET_PREFIX + ticket


def sse_session_key(ticket: str) -> str:
    """The stream session opened by redeeming ``ticket``."""
    return SSE_SESSION_PREFIX + hashlib.sha256(ticket.encode()).hexdigest()

"""Redis key names of chat message streams.

A message's sequence counter and its live channel share the hash tag
``{m:<message id>}``, so the publish script (``lua/publish.lua``) may touch both in
Redis Cluster.  The strings are stored data: changing one orphans live counters.
"""

from __future__ import annotations

import uuid

__all__ = ["channel_of", "seq_key_of"]


def channel_of(message_id: uuid.UUID) -> str:
    """The live pub/sub channel of one message's events."""
    return f"herald:{{m:{message_id}}}"


def seq_key_of(message_id: uuid.UUID) -> str:
    """The counter handing out the message's sequence numbers (0, 1, 2 …)."""
    return f"herald:{{m:{message_id}}}:seq"

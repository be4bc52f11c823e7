"""Redis key names of the record: a user's or a topic's stream, its metadata, its
idempotency keys and its live channel.

Every key of one stream embeds the stream's hash tag (``{u:<user>}`` or
``{t:<topic>}``), so in Redis Cluster they share one slot and the publish script may
touch them all.  Other areas name their keys in their own ``keys`` module and use
tags of their own kind, so no two areas ever share a key:

=========  ===========================  ========================================
tag        area                         module
=========  ===========================  ========================================
``u``      user streams, SSE budgets    ``herald.journal.keys``, ``herald.streams.keys``
``t``      topic streams                ``herald.journal.keys``
``m``      chat message streams         ``herald.journal.messages.keys``
``q``      task queues                  ``herald.journal.tasks.keys``
``task``   task status records          ``herald.journal.tasks.keys``
=========  ===========================  ========================================

Keys without a tag (``herald:workers``, ``herald:oauth:state:*``, ``herald:ticket:*``,
``herald:sse-session:*``, ``herald:hub:*``) are single keys, never touched together
with another one in a script.  The strings are stored data: changing one orphans
what is already in Redis.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "PREFIX",
    "channel",
    "hash_tag",
    "idempotency_key",
    "meta_key",
    "stream_key",
    "stream_key_pattern",
]

PREFIX: Final = "herald:"


def hash_tag(kind: str, name: str) -> str:
    """``{<kind>:<name>}``: the part of a key Redis Cluster hashes to pick the slot.
    ``name`` must not contain braces (``NAME_RE`` refuses them)."""
    return f"{{{kind}:{name}}}"


def channel(tag: str) -> str:
    """The live pub/sub channel; also the stream's public name in API responses."""
    return f"{PREFIX}{tag}"


def stream_key(tag: str) -> str:
    """The Redis Stream holding the envelopes."""
    return f"{PREFIX}{tag}:stream"


def meta_key(tag: str) -> str:
    """Hash with the stream's ``last`` id and ``epoch``."""
    return f"{PREFIX}{tag}:meta"


def idempotency_key(tag: str, key: str) -> str:
    """The id a publish with idempotency key ``key`` got (expires)."""
    return f"{PREFIX}{tag}:idem:{key}"


def stream_key_pattern(kind: str) -> str:
    """A ``SCAN … MATCH`` pattern for every user (``u``) or topic (``t``) stream key.
    Names cannot contain glob characters, so it matches those keys and no others."""
    return stream_key(hash_tag(kind, "*"))

"""Redis key names of live delivery: per-user budgets and the hub's control channel.

A user's budget keys carry the user's hash tag (``{u:<user>}``, see
``herald.journal.keys``), so they sit in the slot of that user's stream.  The strings
are shared by every process: changing one splits the count between versions.
"""

from __future__ import annotations

from typing import Final

from herald.journal.positions import Target

__all__ = ["HUB_CONTROL_PREFIX", "connections_key", "hub_control_channel", "replays_key"]

HUB_CONTROL_PREFIX: Final = "herald:hub:"


def connections_key(user: str) -> str:
    """Sorted set of the user's open streams: member connection id, score lease expiry ms."""
    return f"herald:{Target.user(user).tag}:conns"


def replays_key(user: str) -> str:
    """Sorted set of the user's recent replays: member a unique id, score time ms."""
    return f"herald:{Target.user(user).tag}:replays"


def hub_control_channel(process_token: str) -> str:
    """A channel only this process's hub subscribes to: a fresh connection has one
    subscription to confirm before it counts as connected, even with no subscribers."""
    return f"{HUB_CONTROL_PREFIX}{process_token}"

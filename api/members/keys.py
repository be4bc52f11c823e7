"""Redis keys of member verification: every key this area touches is named here."""

from __future__ import annotations

__all__ = ["verified_key"]


def verified_key(member_uuid: str) -> str:
    """The cached verified member ``member_uuid`` (canonical lower-case form).

    Only verified results live here: a member the directory does not know may join
    any minute, so a not-found answer is never stored.
    """
    return f"herald:member:{member_uuid}:verified"

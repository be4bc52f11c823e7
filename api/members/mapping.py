"""From the member directory's answer to what Herald returns: pure functions.

The directory (a Novi-like association-management API) answers
``GET /customers/{uuid}`` with a JSON object whose identity fields are
``FirstName``, ``LastName``, ``Name`` and ``Email``; a member it does not know
may come back as 200 with all of them empty.
"""

from __future__ import annotations

import email.utils
import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "InvalidMember",
    "Member",
    "display_name",
    "member_from_body",
    "normalise_email",
    "parse_member_uuid",
    "retry_after_s",
]

_IDENTITY_FIELDS = ("FirstName", "LastName", "Name", "Email")
MAX_RETRY_AFTER_S = 3600


class InvalidMember(ValueError):
    """The directory's answer is not a member record; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Member:
    """A verified member as Herald shows it: a display name and a usable email."""

    full_name: str | None
    email: str | None

    def to_json(self) -> dict[str, str | None]:
        return {"full_name": self.full_name, "email": self.email}

    @classmethod
    def from_json(cls, raw: Any) -> Member:
        if not isinstance(raw, dict):
            raise InvalidMember("a cached member must be a JSON object")
        name, mail = raw.get("full_name"), raw.get("email")
        if not all(v is None or isinstance(v, str) for v in (name, mail)):
            raise InvalidMember("a cached member's fields must be strings or null")
        return cls(name, mail)


def parse_member_uuid(text: str) -> str | None:
    """The canonical lower-case form of a hyphenated UUID, or None if ``text`` is not one."""
    if len(text) != 36:
        return None
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        return None
    canonical = str(parsed)
    return canonical if canonical == text.lower() else None


def normalise_email(raw: str) -> str | None:
    """The directory hands back ``a+b@x.org`` as ``a b@x.org`` (a ``+`` decoded as a
    form-encoded space somewhere upstream): put the ``+`` back.  Surrounding blanks
    go, the domain is lower-cased (it is case-insensitive; the local part is not)."""
    text = raw.strip()
    if not text:
        return None
    local, at, domain = text.rpartition("@")
    if not at:
        return text.replace(" ", "+")
    return f"{local.replace(' ', '+')}@{domain.strip().lower()}"


def display_name(first: str, last: str, name: str) -> str | None:
    """``"{FirstName} {LastName[0]}."``; without both parts the directory's ``Name``;
    without that whatever first name there is; None when every name is empty."""
    first, last, name = first.strip(), last.strip(), " ".join(name.split())
    if first and last:
        return f"{first} {last[0]}."
    return name or first or None


def _text(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidMember(f"field {field!r} must be a string, not {type(value).__name__}")
    return value


def member_from_body(body: Any) -> Member | None:
    """The member in a 200 answer, or None for an empty member (no name, no email).

    Raises ``InvalidMember`` when the body is not an object or an identity field has
    the wrong type.
    """
    if not isinstance(body, dict):
        raise InvalidMember(f"expected a JSON object, got {type(body).__name__}")
    first, last, name, mail = (_text(body, f) for f in _IDENTITY_FIELDS)
    member = Member(display_name(first, last, name), normalise_email(mail))
    if member.full_name is None and member.email is None:
        return None
    return member


def retry_after_s(header: str | None, now: datetime, default: int) -> int:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date),
    clamped to 1..3600; ``default`` when it is missing or unreadable."""
    if header is None or not header.strip():
        return default
    text = header.strip()
    if text.isdigit():
        seconds: float = int(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return default
        if when.tzinfo is None:  # an HTTP date is always GMT
            return default
        seconds = math.ceil((when - now).total_seconds())
    return int(min(max(seconds, 1), MAX_RETRY_AFTER_S))

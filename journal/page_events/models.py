"""A page event as a value, and the pure rules about its window.

A window is ``[start_date, end_date)``: open from its start (inclusive) until its
end (exclusive); a missing bound is unbounded.  Every instant is timezone-aware;
comparisons happen between instants, so the offset an admin wrote a date in
(``+02:00`` in summer, ``+01:00`` in winter) never matters.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from herald.journal.envelope import format_time
from herald.journal.maintenance.cutoff import require_aware

__all__ = [
    "CHANGES",
    "Ambiguous",
    "Change",
    "PageEvent",
    "resolve",
]

Change = Literal["created", "updated", "deleted", "window_opened", "window_closed"]
CHANGES: Final = ("created", "updated", "deleted", "window_opened", "window_closed")


@dataclass(frozen=True, slots=True)
class PageEvent:
    uid: uuid.UUID
    name: str
    description: str | None
    page_context: str
    filters: dict[str, Any]  # JSON-safe, exactly as stored
    limit: int | None
    is_active: bool
    start_date: datetime | None
    end_date: datetime | None
    created_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> PageEvent:
        m = row._mapping
        return cls(
            uid=m["uid"],
            name=m["name"],
            description=m["description"],
            page_context=m["page_context"],
            filters=dict(m["filters"] or {}),
            limit=m["limit"],
            is_active=m["is_active"],
            start_date=m["start_date"],
            end_date=m["end_date"],
            created_by=m["created_by"],
            created_at=m["created_at"],
            updated_at=m["updated_at"],
        )

    def applies_at(self, now: datetime) -> bool:
        """Active, and ``now`` inside ``[start_date, end_date)``."""
        now = require_aware(now, "now")
        if not self.is_active:
            return False
        if self.start_date is not None and now < self.start_date:
            return False
        return self.end_date is None or now < self.end_date

    def to_json(self) -> dict[str, Any]:
        """As the API shows it: RFC 3339 UTC times, ``null`` for an open bound."""
        return {
            "uid": str(self.uid),
            "name": self.name,
            "description": self.description,
            "page_context": self.page_context,
            "filters": self.filters,
            "limit": self.limit,
            "is_active": self.is_active,
            "start_date": _time(self.start_date),
            "end_date": _time(self.end_date),
            "created_by": self.created_by,
            "created_at": format_time(self.created_at),
            "updated_at": format_time(self.updated_at),
        }


def _time(t: datetime | None) -> str | None:
    return None if t is None else format_time(t)


class Ambiguous(Exception):
    """More than one event applies to a route at once."""

    code = "ambiguous_page_event"

    def __init__(self, route: str, uids: list[uuid.UUID]) -> None:
        super().__init__(f"{len(uids)} active page events apply to {route!r} now; at most one may")
        self.route = route
        self.uids = uids


def resolve(route: str, candidates: list[PageEvent], now: datetime) -> PageEvent | None:
    """The one event of ``candidates`` that applies to ``route`` at ``now``, or None;
    raises ``Ambiguous`` (uids sorted) when several do.  Pure."""
    now = require_aware(now, "now")
    found = [e for e in candidates if e.page_context == route and e.applies_at(now)]
    if len(found) > 1:
        raise Ambiguous(route, sorted(e.uid for e in found))
    return found[0] if found else None

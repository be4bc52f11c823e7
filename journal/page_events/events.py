"""``page_event.changed`` on topic ``page-events``: ``{uid, page_context, change}``,
plus ``previous_page_context`` when an update moved the event to another route
(pages of both routes must re-resolve)."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from herald.journal.base import Journal, try_publish
from herald.journal.page_events.keys import EVENT_TYPE, TOPIC
from herald.journal.page_events.models import Change
from herald.journal.positions import Target

__all__ = ["change_data", "publish_change", "transition_key"]

log = logging.getLogger("herald.page_events")


def change_data(
    uid: uuid.UUID, page_context: str, change: Change, previous_page_context: str | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {"uid": str(uid), "page_context": page_context, "change": change}
    if previous_page_context is not None and previous_page_context != page_context:
        data["previous_page_context"] = previous_page_context
    return data


def transition_key(uid: uuid.UUID, change: Change, at: datetime) -> str:
    """The idempotency key of a window transition: a publish retried after a claim
    whose commit failed is stored once."""
    return f"page_event:{uid}:{change}:{at.timestamp():.6f}"


async def publish_change(journal: Journal, data: dict[str, Any]) -> bool:
    """Publish an API change; never raises (the row is the record), logs a failure."""
    outcome = await try_publish(journal, Target.topic(TOPIC), EVENT_TYPE, data)
    if not outcome.ok:
        log.warning(
            "page event %s: %s (%s) not published: %s",
            data.get("uid"),
            EVENT_TYPE,
            data.get("change"),
            outcome.detail,
        )
    return outcome.ok

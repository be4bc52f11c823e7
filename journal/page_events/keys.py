"""Names page events use outside PostgreSQL: the topic, the event type, Redis keys."""

from __future__ import annotations

from typing import Final

__all__ = ["EVENT_TYPE", "TOPIC", "VERSION_KEY"]

TOPIC: Final = "page-events"
EVENT_TYPE: Final = "page_event.changed"
# Counter bumped after every committed change: each process's /current cache is
# valid only for the value it was filled under.
VERSION_KEY: Final = "herald:page_events:version"

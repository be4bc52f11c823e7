"""Names page events use outside PostgreSQL: the topic, the event type, Redis keys."""

from __future__ import annotations

from typing import Final

__all__ = ["ALL_ROUTES", "EVENT_TYPE", "TOPIC", "VERSIONS_KEY"]

TOPIC: Final = "page-events"
EVENT_TYPE: Final = "page_event.changed"
# Hash of change counters, one field per route, bumped after every committed change:
# a process's cached /current entry is valid only under the counters it was filled
# under.  The field ALL_ROUTES (no route is empty) invalidates every route at once.
VERSIONS_KEY: Final = "herald:page_events:versions"
ALL_ROUTES: Final = ""

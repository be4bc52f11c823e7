"""Page events: time-windowed runtime configuration per page route.

The API (``herald.api.page_events``) writes them through the store, answers
``/current`` through the route cache, and runs a window watcher per process that
announces each window opening and closing once across all processes.
"""

from herald.journal.page_events.cache import RouteCache
from herald.journal.page_events.events import change_data, publish_change, transition_key
from herald.journal.page_events.filters import (
    ExtractionType,
    MediaType,
    PageEventFilters,
    ReleaseRights,
    UnknownFilterFields,
)
from herald.journal.page_events.keys import ALL_ROUTES, EVENT_TYPE, TOPIC, VERSIONS_KEY
from herald.journal.page_events.models import CHANGES, Ambiguous, Change, PageEvent, resolve
from herald.journal.page_events.service import PageEvents
from herald.journal.page_events.store import EDITABLE, PageEventStore, Transition
from herald.journal.page_events.watcher import WindowWatcher

__all__ = [
    "ALL_ROUTES",
    "CHANGES",
    "EDITABLE",
    "EVENT_TYPE",
    "TOPIC",
    "VERSIONS_KEY",
    "Ambiguous",
    "Change",
    "ExtractionType",
    "MediaType",
    "PageEvent",
    "PageEventFilters",
    "PageEventStore",
    "PageEvents",
    "ReleaseRights",
    "RouteCache",
    "Transition",
    "UnknownFilterFields",
    "WindowWatcher",
    "change_data",
    "publish_change",
    "resolve",
    "transition_key",
]

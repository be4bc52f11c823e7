"""The filter set a page event carries: a typed schema, stored JSON-safe.

``PageEventFilters.stored()`` is what goes into ``page_events.filters`` and what
the API returns: UUIDs and dates as strings, enums as their values, only the
fields that were given.  Validating a stored value again yields the same value
(the round trip is the contract; ``tests/unit/test_page_event_filters.py``).
"""

from __future__ import annotations

import uuid
from datetime import date
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ExtractionType",
    "MediaType",
    "PageEventFilters",
    "ReleaseRights",
    "UnknownFilterFields",
    "unknown_fields",
]

MAX_ITEMS = 200
_Text = Field(None, min_length=1, max_length=500)


class MediaType(StrEnum):
    ARTICLE = "article"
    AUDIO = "audio"
    DOCUMENT = "document"
    IMAGE = "image"
    PODCAST = "podcast"
    VIDEO = "video"


class ReleaseRights(StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"
    RESTRICTED = "restricted"
    EMBARGOED = "embargoed"


class ExtractionType(StrEnum):
    FULL_TEXT = "full_text"
    SUMMARY = "summary"
    METADATA = "metadata"
    TRANSCRIPT = "transcript"


class UnknownFilterFields(ValueError):
    """The filter set names fields the schema does not have."""

    code = "unknown_filter_fields"

    def __init__(self, fields: list[str]) -> None:
        super().__init__(
            f"unknown filter fields: {', '.join(fields)}; known: "
            f"{', '.join(sorted(PageEventFilters.model_fields))}"
        )
        self.fields = fields


class PageEventFilters(BaseModel):
    """Which reviews a page shows during its event.  Every field is optional; lists
    are kept in the order given.  The published range is in calendar days,
    inclusive at both ends."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    category_ids: list[uuid.UUID] | None = Field(None, max_length=MAX_ITEMS)
    media_types: list[MediaType] | None = Field(None, max_length=MAX_ITEMS)
    release_rights: list[ReleaseRights] | None = Field(None, max_length=MAX_ITEMS)
    extraction_types: list[ExtractionType] | None = Field(None, max_length=MAX_ITEMS)
    published_from: date | None = None
    published_to: date | None = None
    search: str | None = _Text
    author: str | None = _Text
    tags: list[str] | None = Field(None, max_length=MAX_ITEMS)

    @field_validator("published_from", "published_to", mode="before")
    @classmethod
    def _calendar_day(cls, value: Any) -> Any:
        # JSON gives a day as "YYYY-MM-DD"; a number would be read as a Unix time.
        if value is not None and not isinstance(value, str | date):
            raise ValueError("give a calendar day as YYYY-MM-DD")
        return value

    @model_validator(mode="after")
    def _checks(self) -> PageEventFilters:
        if (
            self.published_from is not None
            and self.published_to is not None
            and self.published_from > self.published_to
        ):
            raise ValueError("published_from is after published_to")
        for tag in self.tags or ():
            if not 1 <= len(tag) <= 100:
                raise ValueError("each tag has 1 to 100 characters")
        return self

    @classmethod
    def parse(cls, raw: Any) -> PageEventFilters:
        """Validate a filter set from JSON; unknown fields raise ``UnknownFilterFields``
        (naming them all) before anything else is checked."""
        if isinstance(raw, dict) and (extra := unknown_fields(raw)):
            raise UnknownFilterFields(extra)
        return cls.model_validate(raw)

    def stored(self) -> dict[str, Any]:
        """The JSON-safe form kept in the database and returned by the API."""
        return self.model_dump(mode="json", exclude_unset=True)


def unknown_fields(raw: dict[str, Any]) -> list[str]:
    return sorted(str(k) for k in raw if k not in PageEventFilters.model_fields)

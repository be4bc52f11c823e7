"""The page event filter schema: typed on the way in, JSON-safe as stored, the same
after a round trip; unknown fields are named; the request body refuses naive dates.
And the resolver: windows compared as instants across offsets and DST changes,
start inclusive, end exclusive, ambiguity naming every match."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from herald.api.errors import ApiError
from herald.api.page_events import PageEventBody
from herald.api.schemas import parse_body
from herald.journal.page_events import (
    Ambiguous,
    ExtractionType,
    MediaType,
    PageEvent,
    PageEventFilters,
    ReleaseRights,
    UnknownFilterFields,
    resolve,
)

CATEGORY = uuid.UUID("6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f")


def test_stored_form_has_uuids_dates_and_enums_as_strings():
    filters = PageEventFilters.parse(
        {
            "category_ids": [str(CATEGORY).upper()],
            "media_types": ["video", "article"],
            "release_rights": ["public"],
            "extraction_types": ["transcript"],
            "published_from": "2026-01-01",
            "published_to": "2026-03-31",
            "search": "spring review",
            "tags": ["launch"],
        }
    )
    assert filters.category_ids == [CATEGORY]
    assert filters.media_types == [MediaType.VIDEO, MediaType.ARTICLE]
    assert filters.published_from == date(2026, 1, 1)
    stored = filters.stored()
    assert stored == {
        "category_ids": [str(CATEGORY)],
        "media_types": ["video", "article"],
        "release_rights": ["public"],
        "extraction_types": ["transcript"],
        "published_from": "2026-01-01",
        "published_to": "2026-03-31",
        "search": "spring review",
        "tags": ["launch"],
    }
    assert json.loads(json.dumps(stored)) == stored  # plain JSON, no custom encoder
    assert PageEventFilters.parse(stored).stored() == stored


def test_only_the_fields_given_are_stored():
    assert PageEventFilters.parse({}).stored() == {}
    assert PageEventFilters.parse({"search": None}).stored() == {"search": None}


def test_unknown_fields_are_named_all_at_once():
    with pytest.raises(UnknownFilterFields) as caught:
        PageEventFilters.parse({"colour": "red", "media_types": ["video"], "brand": 1})
    assert caught.value.fields == ["brand", "colour"]
    assert "brand, colour" in str(caught.value)


@pytest.mark.parametrize(
    "raw",
    [
        {"category_ids": ["not-a-uuid"]},
        {"media_types": ["hologram"]},
        {"release_rights": "public"},
        {"published_from": "2026-02-30"},
        {"published_from": "2026-03-02", "published_to": "2026-03-01"},
        {"published_to": 0},  # a number would be read as a Unix time
        {"published_from": 1767225600},
        {"tags": [""]},
        {"search": ""},
    ],
)
def test_invalid_filters_are_refused(raw: dict[str, object]):
    with pytest.raises(ValidationError):
        PageEventFilters.parse(raw)


filters_strategy = st.fixed_dictionaries(
    {},
    optional={
        "category_ids": st.lists(st.uuids(), max_size=5),
        "media_types": st.lists(st.sampled_from(list(MediaType)), max_size=4),
        "release_rights": st.lists(st.sampled_from(list(ReleaseRights)), max_size=4),
        "extraction_types": st.lists(st.sampled_from(list(ExtractionType)), max_size=4),
        "published_from": st.none() | st.dates(max_value=date(2100, 1, 1)),
        "search": st.none() | st.text(min_size=1, max_size=50),
        "author": st.none() | st.text(min_size=1, max_size=50),
        "tags": st.lists(st.text(min_size=1, max_size=20), max_size=5),
    },
)


@given(filters_strategy)
def test_stored_filters_survive_a_json_round_trip(raw: dict[str, object]):
    filters = PageEventFilters.model_validate(raw)
    stored = filters.stored()
    wire = orjson.loads(orjson.dumps(stored))  # what PostgreSQL's jsonb hands back
    assert wire == stored
    again = PageEventFilters.parse(wire)
    assert again == filters
    assert again.stored() == stored


BODY = {"name": "Spring", "page_context": "/reviews"}


def test_the_body_refuses_naive_datetimes_naming_the_field():
    with pytest.raises(ApiError) as caught:
        parse_body(PageEventBody, {**BODY, "start_date": "2026-12-05T09:00:00"})
    assert caught.value.status == 422
    fields = [p["field"] for p in caught.value.extra["problems"]]
    assert fields == ["start_date"]
    assert "timezone" in caught.value.extra["problems"][0]["problem"]


def test_the_body_refuses_timestamps_and_an_empty_window():
    for extra in ({"end_date": 1733389200}, {"start_date": True}):
        with pytest.raises(ApiError):
            parse_body(PageEventBody, {**BODY, **extra})
    with pytest.raises(ApiError) as caught:
        parse_body(
            PageEventBody,
            {**BODY, "start_date": "2026-12-05T10:00:00+01:00", "end_date": "2026-12-05T09:00Z"},
        )
    assert "before end_date" in str(caught.value.extra["problems"])


def test_the_body_keeps_instants_and_stores_them_in_utc():
    body = parse_body(
        PageEventBody,
        {**BODY, "start_date": "2026-03-29T03:30:00+02:00", "limit": 5},
    )
    assert body.fields()["start_date"] == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    with pytest.raises(ApiError):
        parse_body(PageEventBody, {**BODY, "limit": "5"})


def _event(**kw: object) -> PageEvent:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    values: dict[str, object] = {
        "uid": uuid.uuid4(),
        "name": "e",
        "description": None,
        "page_context": "/r",
        "filters": {},
        "limit": None,
        "is_active": True,
        "start_date": None,
        "end_date": None,
        "created_by": "admin",
        "created_at": now,
        "updated_at": now,
    }
    values.update(kw)
    return PageEvent(**values)  # type: ignore[arg-type]


BERLIN = ZoneInfo("Europe/Berlin")
# 2026-03-29 02:00 Berlin: clocks jump to 03:00 (UTC+1 → UTC+2).
SPRING_SWITCH = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "now", "applies"),
    [
        (None, None, SPRING_SWITCH, True),  # no dates: always
        (SPRING_SWITCH, None, SPRING_SWITCH, True),  # start inclusive
        (None, SPRING_SWITCH, SPRING_SWITCH, False),  # end exclusive
        (SPRING_SWITCH, None, SPRING_SWITCH - timedelta(microseconds=1), False),  # future
        (None, SPRING_SWITCH, SPRING_SWITCH + timedelta(seconds=1), False),  # expired
        # The same instant written in Berlin's summer time, compared in UTC and vice versa.
        (datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN), None, SPRING_SWITCH, True),
        (
            datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN),
            None,
            datetime(2026, 3, 29, 1, 59, tzinfo=timezone(timedelta(hours=1))),
            False,
        ),
        # Autumn: 02:30 happens twice in Berlin; fold picks the second, an hour later.
        (
            datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=BERLIN),
            None,
            datetime(2026, 10, 25, 0, 45, tzinfo=UTC),
            False,
        ),
        (
            datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=BERLIN),
            None,
            datetime(2026, 10, 25, 1, 30, tzinfo=UTC),
            True,
        ),
    ],
)
def test_windows_compare_instants_whatever_the_offset(
    start: datetime | None, end: datetime | None, now: datetime, applies: bool
):
    event = _event(start_date=start, end_date=end)
    assert event.applies_at(now) is applies
    assert (resolve("/r", [event], now) is event) is applies


def test_resolve_ignores_other_routes_and_inactive_events_and_names_ambiguity():
    now = datetime(2026, 6, 1, tzinfo=UTC)
    a, b = _event(), _event()
    assert resolve("/r", [_event(is_active=False), _event(page_context="/x")], now) is None
    with pytest.raises(Ambiguous) as caught:
        resolve("/r", [a, b, _event(page_context="/x")], now)
    assert caught.value.uids == sorted([a.uid, b.uid])


def test_resolve_refuses_a_naive_now():
    with pytest.raises(TypeError):
        resolve("/r", [], datetime(2026, 1, 1))  # noqa: DTZ001 - the mistake under test


instants = st.datetimes(
    min_value=datetime(2026, 1, 1),  # noqa: DTZ001 - hypothesis takes naive bounds
    max_value=datetime(2026, 12, 31),  # noqa: DTZ001
    timezones=st.sampled_from(
        [UTC, BERLIN, ZoneInfo("America/New_York"), ZoneInfo("Asia/Kolkata")]
    ),
)


@given(
    st.lists(
        st.tuples(st.none() | instants, st.none() | instants, st.booleans(), st.booleans()),
        max_size=6,
    ),
    instants,
)
def test_resolve_answers_the_one_event_whose_window_holds_now(
    specs: list[tuple[datetime | None, datetime | None, bool, bool]], now: datetime
):
    events = [
        _event(start_date=s, end_date=e, is_active=active, page_context="/r" if here else "/x")
        for s, e, active, here in specs
    ]
    applying = [
        e
        for e in events
        if e.is_active
        and e.page_context == "/r"
        and (e.start_date is None or e.start_date.timestamp() <= now.timestamp())
        and (e.end_date is None or now.timestamp() < e.end_date.timestamp())
    ]
    if len(applying) > 1:
        with pytest.raises(Ambiguous) as caught:
            resolve("/r", events, now)
        assert caught.value.uids == sorted(e.uid for e in applying)
    else:
        assert resolve("/r", events, now) is (applying[0] if applying else None)

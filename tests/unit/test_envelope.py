from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald.journal.envelope import (
    EnvelopeTooLarge,
    InvalidEnvelope,
    decode,
    format_time,
    prepare,
)


def _prep(type_: str = "source.ingest.progress", data: object = None, **kw: object):
    return prepare(
        type_,
        {"current": 1} if data is None else data,
        source=kw.pop("source", "/workers/ingest"),
        subject=kw.pop("subject", "user:42"),
        max_bytes=kw.pop("max_bytes", 65536),
        **kw,
    )


@pytest.mark.parametrize(
    "type_",
    [
        "source.ingest.progress",
        "printer.status",
        "mcp.oauth.awaiting_redirect",
        "herald.gap",
        "a.b",
    ],
)
def test_accepts_dotted_lowercase_types(type_: str):
    assert _prep(type_).type == type_


@pytest.mark.parametrize(
    "type_", ["progress", "Source.ingest", "source..x", ".x", "x.", "x.Y", "1x.y", "x-y.z", ""]
)
def test_rejects_other_types(type_: str):
    with pytest.raises(InvalidEnvelope, match="must match"):
        _prep(type_)


@pytest.mark.parametrize("data", [[1, 2], "text", 3, None.__class__])
def test_data_must_be_an_object(data: object):
    with pytest.raises(InvalidEnvelope):
        prepare("a.b", data, source="/s", subject=None, max_bytes=65536)


def test_non_json_data_is_invalid_not_a_crash():
    with pytest.raises(InvalidEnvelope, match="JSON"):
        _prep(data={"when": object()})


def test_size_cap_counts_the_whole_envelope_with_its_longest_id():
    small = _prep(data={"x": "a" * 100})
    limit = len(small.with_id("1-0")) + 20  # this id fits, the longest possible one does not
    with pytest.raises(EnvelopeTooLarge) as e:
        _prep(data={"x": "a" * 100}, max_bytes=limit)
    assert e.value.limit == limit and e.value.size > limit


def test_spliced_envelope_is_cloudevents_json():
    raw = _prep(time=datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)).with_id(
        "1732270000123-0"
    )
    env = orjson.loads(raw)
    assert list(env) == [
        "specversion",
        "id",
        "source",
        "type",
        "time",
        "subject",
        "datacontenttype",
        "data",
    ]
    assert env["id"] == "1732270000123-0"
    assert env["time"] == "2026-11-22T10:00:00.123Z"
    assert decode(raw).data == {"current": 1}


def test_time_is_converted_to_utc_and_naive_is_refused():
    paris = timezone(timedelta(hours=1))
    assert format_time(datetime(2026, 1, 1, 1, 0, tzinfo=paris)) == "2026-01-01T00:00:00.000Z"
    with pytest.raises(ValueError, match="naive"):
        format_time(datetime(2026, 1, 1))  # noqa: DTZ001


@given(
    st.dictionaries(
        st.text(max_size=20), st.text(max_size=50) | st.integers(-(2**63), 2**64 - 1), max_size=10
    )
)
def test_any_json_object_round_trips(data: dict[str, object]):
    raw = prepare("a.b", data, source="/s", subject=None, max_bytes=1 << 20).with_id("5-7")
    assert decode(raw).data == data and decode(raw).id == "5-7"

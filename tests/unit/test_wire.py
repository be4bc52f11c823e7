"""The wire formats of ``herald.journal.wire``: each encoder's output decodes back."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald.journal.envelope import prepare
from herald.journal.wire import (
    HEAD,
    KEEPALIVE,
    MESSAGE_EPOCH,
    WATCHDOG_ID,
    Frame,
    FrameError,
    decode_frame,
    encode_frame,
    envelope_id,
    gap_envelope,
    retry_field,
    sse_data,
    sse_frame,
    watchdog_envelope,
)
from herald.streams.hub import parse_frame

_ids = st.builds(
    lambda ms, seq: f"{ms}-{seq}".encode(),
    st.integers(min_value=0, max_value=2**48),
    st.integers(min_value=0, max_value=2**20),
)
_epochs = st.text(alphabet="0123456789abcdef", min_size=1, max_size=32).map(str.encode)


def _envelope(id_: bytes, data: object) -> bytes:
    tail = prepare("demo.wire", {"x": data}, source="/t", subject=None, max_bytes=1 << 20).tail
    return HEAD + id_ + tail


@given(_epochs, st.one_of(st.just(b""), _ids), _ids, st.text())
def test_a_live_frame_round_trips(epoch: bytes, previous: bytes, id_: bytes, data: str):
    envelope = _envelope(id_, data)  # data may hold spaces: only the first two split
    frame = encode_frame(epoch, previous, envelope)
    assert decode_frame(frame) == Frame(epoch, previous, id_, envelope)
    assert orjson.loads(decode_frame(frame).envelope)["id"] == id_.decode()


def test_a_message_frame_decodes_with_its_number_as_id():
    live = parse_frame("ch", encode_frame(MESSAGE_EPOCH, b"6", _envelope(b"7", 1)))
    assert (live.epoch, live.previous, live.id.ms) == ("m", live.id.__class__(6, 0), 7)


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"onlyonefield",
        b"e 1-0",  # two fields
        b" 1-0 " + HEAD + b'2-0","x":1}',  # no epoch
        b'e 1-0 {"id":"2-0"}',  # not Herald's head
        b"e 1-0 " + HEAD + b"2-0",  # id never terminated
        b"e 1-0 " + HEAD + b'","x":1}',  # empty id
    ],
)
def test_malformed_frames_raise_frame_error(frame: bytes):
    with pytest.raises(FrameError):
        decode_frame(frame)


@pytest.mark.parametrize("frame", [b"e x-y " + HEAD + b'2-0"}', b"e 1-0 " + HEAD + b'z"}'])
def test_a_frame_with_a_malformed_id_is_a_frame_error_for_the_hub(frame: bytes):
    with pytest.raises(FrameError):
        parse_frame("ch", frame)


def test_envelope_id_reads_the_head():
    assert envelope_id(_envelope(b"12-3", None)) == b"12-3"
    with pytest.raises(FrameError):
        envelope_id(b'{"id":"1-0"}')


def test_sse_frames_parse_as_event_stream_fields():
    envelope = _envelope(b"1-0", "two words")
    frame = sse_frame("u~ab~1-0", envelope)
    assert frame.endswith(b"\n\n") and frame.count(b"\n") == 3
    fields = dict(line.split(b": ", 1) for line in frame.strip().split(b"\n"))
    assert fields == {b"id": b"u~ab~1-0", b"data": envelope}
    assert sse_data(envelope) == b"data: " + envelope + b"\n\n"


def test_keepalive_is_a_comment_and_retry_a_field():
    assert KEEPALIVE.startswith(b":") and KEEPALIVE.endswith(b"\n\n")
    assert retry_field(3000) == b"retry: 3000\n\n"


def test_gap_envelope_is_a_plain_message_with_an_id_of_its_own():
    raw = gap_envelope("user:x", {"reason": "trimmed"}, "2026-01-01T00:00:00.000Z")
    assert raw.startswith(HEAD)
    doc = orjson.loads(raw)
    again = orjson.loads(gap_envelope("user:x", {}, "2026-01-01T00:00:00.000Z"))
    assert doc["type"] == "herald.gap" and doc["id"].startswith("gap-")
    assert doc["id"] != again["id"], "two gaps at one cursor are two events"
    assert doc["subject"] == "user:x" and doc["data"] == {"reason": "trimmed"}


def test_watchdog_envelopes_have_unique_watchdog_ids():
    tail = b'","type":"message.error","data":{}}'
    raw = watchdog_envelope(tail)
    assert envelope_id(raw).startswith(WATCHDOG_ID + b"-")
    assert envelope_id(raw) != envelope_id(watchdog_envelope(tail))
    assert orjson.loads(raw)["type"] == "message.error"

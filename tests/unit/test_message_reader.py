"""The merge rules of the message reader, without a database: live events are
delivered in order exactly once, held back behind a hole, and the stream ends
at a terminal event."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest

from herald.journal.messages.store import message_envelope
from herald.journal.positions import StreamId
from herald.streams.hub import LiveMessage, parse_frame
from herald.streams.message_reader import (
    MessageReader,
    ReaderLimits,
    is_terminal,
    watchdog_envelope,
)
from herald.streams.session import Overflowed

MID = uuid.UUID("00000000-0000-0000-0000-000000000001")


def live(seq: int, event_type: str = "answer") -> LiveMessage:
    env = message_envelope(MID, seq, event_type, b'{"n":%d}' % seq, datetime.now(UTC))
    previous = str(seq - 1).encode() if seq > 0 else b""
    return parse_frame("ch", b"m " + previous + b" " + env)


def reader(after: int = -1, max_held: int = 100) -> MessageReader:
    return MessageReader(None, MID, after, ReaderLimits(max_held=max_held))  # type: ignore[arg-type]


def delivered(r: MessageReader) -> list[int]:
    out = r.take().decode()
    return [int(line[4:]) for line in out.splitlines() if line.startswith("id: ")]


def test_a_live_frame_carries_the_sequence_number():
    item = live(7)
    assert (item.id, item.previous) == (StreamId(7, 0), StreamId(6, 0))
    assert live(0).previous is None
    assert orjson.loads(item.envelope)["id"] == "7"


@pytest.mark.parametrize(
    ("after", "arrivals", "expected", "hole"),
    [
        (-1, [0, 1, 2], [0, 1, 2], False),
        (-1, [0, 0, 1, 1], [0, 1], False),  # duplicates dropped
        (1, [0, 1, 2], [2], False),  # already delivered from the table
        (-1, [2, 3], [], True),  # 0 and 1 not flushed yet: held back
        (-1, [2, 0, 1], [0, 1, 2], False),  # the hole fills: released in order
        (-1, [3, 1, 0], [0, 1], True),  # 2 still missing
    ],
)
def test_live_merge(after: int, arrivals: list[int], expected: list[int], hole: bool):
    r = reader(after)
    for seq in arrivals:
        r.offer(live(seq))
    assert delivered(r) == expected
    assert r.has_hole is hole


def test_a_terminal_event_ends_the_stream_and_nothing_follows():
    r = reader()
    r.offer(live(0))
    r.offer(live(2))
    r.offer(live(1, "end"))
    assert delivered(r) == [0, 1]
    assert r.ended and not r.has_hole


def test_too_many_held_events_end_the_response():
    r = reader(max_held=3)
    for seq in (2, 3, 4):
        r.offer(live(seq))
    with pytest.raises(Overflowed):
        r.offer(live(5))


def test_watchdog_envelope_is_a_terminal_error_without_a_number():
    env = watchdog_envelope(MID, "producer_stale", "no heartbeat")
    body = orjson.loads(env)
    assert body["type"] == "message.error" and body["id"].startswith("watchdog-")
    # Unique, as every CloudEvents id: two watchdog errors are two events.
    again = orjson.loads(watchdog_envelope(MID, "producer_stale", "no heartbeat"))
    assert again["id"] != body["id"] and again["source"] == body["source"]
    assert body["source"] == f"/herald/messages/{MID}"
    assert body["data"] == {"code": "producer_stale", "message": "no heartbeat"}
    assert body["time"].endswith("Z")
    assert is_terminal(env) and not is_terminal(live(0).envelope)

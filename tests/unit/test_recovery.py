"""The recovery rules, as tables, plus a property: replaying a journal through
``classify`` delivers every kept entry once, and gaps exactly when entries are gone."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald.journal.positions import ZERO_ID, StreamId
from herald.streams.cursor import Cursor, CursorError, Position
from herald.streams.recovery import Step, classify


def sid(n: int) -> StreamId:
    return StreamId(1000 + n, 0)


@pytest.mark.parametrize(
    ("last", "epoch", "entry", "previous", "step"),
    [
        (Position("e1", sid(5)), "e1", sid(6), sid(5), Step.NEXT),
        (Position("e1", sid(5)), "e1", sid(5), sid(4), Step.DUPLICATE),
        (Position("e1", sid(5)), "e1", sid(3), sid(2), Step.DUPLICATE),
        (Position("e1", sid(5)), "e1", sid(8), sid(7), Step.BEHIND),
        (Position("e1", sid(5)), "e2", sid(8), None, Step.LOST),
        (Position("e1", sid(5)), "e2", sid(1), None, Step.LOST),
        # First entry ever after a cursor older than it: nothing was before it.
        (Position("e1", sid(0)), "e1", sid(3), None, Step.NEXT),
        # Hand-written cursor between two entries: nothing missing.
        (Position(None, StreamId(1005, 5)), "e1", sid(6), sid(5), Step.NEXT),
        # Unknown epoch yet (stream did not exist at connect): adopt any.
        (Position(None, ZERO_ID), "e9", sid(1), None, Step.NEXT),
        (Position(None, ZERO_ID), "e9", sid(2), sid(1), Step.BEHIND),
    ],
)
def test_classify(
    last: Position, epoch: str, entry: StreamId, previous: StreamId | None, step: Step
):
    assert classify(last, epoch, entry, previous) is step


@pytest.mark.parametrize(
    "text",
    [
        "u~abc123~1795372301038-0",
        "u~~0-0,t:printers~d7a02870b613~1795372301427-3",
        "u~ff~1-2,t:a.b@c|d:e+f=g-h~~5-6",
    ],
)
def test_cursor_round_trips(text: str):
    assert str(Cursor.parse(text)) == text


def test_plain_stream_id_is_the_user_position():
    assert Cursor.parse("1795372301038-4").get("u") == Position(None, StreamId(1795372301038, 4))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "u~x",
        "u~XYZ~1-0",
        "u~ab~1-0,u~ab~2-0",
        "t:~ab~1-0",
        "t:a{b}~ab~1-0",
        "u~ab~1",
        "u~ab~-1-0",
        "x~ab~1-0",
        ",".join(f"t:t{i}~~1-0" for i in range(65)),
    ],
)
def test_malformed_cursors_are_refused(text: str):
    with pytest.raises(CursorError):
        Cursor.parse(text)


@given(
    n=st.integers(1, 60),
    kept_from=st.integers(0, 60),
    cursor_at=st.integers(0, 60),
)
def test_replay_delivers_kept_entries_and_gaps_only_when_something_is_gone(
    n: int, kept_from: int, cursor_at: int
):
    """Entries 1..n, chained by previous ids; the journal kept kept_from+1..n."""
    kept_from = min(kept_from, n - 1)
    cursor_at = min(cursor_at, n)
    kept = [(sid(i), sid(i - 1) if i > 1 else None) for i in range(kept_from + 1, n + 1)]
    last = Position("e", sid(cursor_at) if cursor_at else ZERO_ID)
    delivered, gaps = [], 0
    for entry, previous in kept:
        step = classify(last, "e", entry, previous)
        if step is Step.DUPLICATE:
            continue
        if step is Step.BEHIND:
            gaps += 1
        delivered.append(entry)
        last = Position("e", entry)
    assert delivered == [e for e, _ in kept if e > (sid(cursor_at) if cursor_at else ZERO_ID)]
    missing = range(cursor_at + 1, kept_from + 1)  # wanted by the client, no longer kept
    assert gaps == (1 if len(missing) > 0 else 0)


@pytest.mark.parametrize(
    "text", ["18446744073709551616-0", "1-18446744073709551616", "99999999999999999999-0"]
)
def test_ids_beyond_64_bits_are_malformed(text: str):
    with pytest.raises(CursorError, match="out of range"):
        StreamId.parse(text)

"""Every byte format Herald puts on a wire, encoded and decoded side by side.

* **The envelope head.**  An envelope's JSON always starts with ``HEAD``, then its
  id, so the journal can splice the id in (in Lua) and a reader can take it out
  again without a JSON parser.
* **The live frame** published on a stream's pub/sub channel:
  ``<epoch> SEP <previous id> SEP <envelope>``, previous empty for the first entry.
  The Lua publish scripts receive ``HEAD`` and ``SEP`` as arguments
  (:func:`lua_frame_args`) rather than spelling them out again; a chat message's
  frames carry ``MESSAGE_EPOCH`` as their epoch.
* **SSE framing** (``text/event-stream``): a frame with an ``id:``, a data-only
  frame, the keepalive comment, the ``retry:`` field sent at connect, and the two
  control envelopes a stream may send: ``herald.gap`` and the message watchdog's
  synthetic ``error``.

Everything here is pure; the round trips are tested in ``tests/unit/test_wire.py``
(and that the Lua scripts' frames decode, against a real Redis).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import NamedTuple

import orjson

__all__ = [
    "HEAD",
    "KEEPALIVE",
    "MESSAGE_EPOCH",
    "SEP",
    "WATCHDOG_ID",
    "Frame",
    "FrameError",
    "decode_frame",
    "encode_frame",
    "envelope_id",
    "gap_envelope",
    "lua_frame_args",
    "retry_field",
    "sse_data",
    "sse_event_tail",
    "sse_frame",
    "watchdog_envelope",
]

# Everything before an envelope's id.  Fixed so the id can be spliced without JSON.
HEAD = b'{"specversion":"1.0","id":"'
# Separates a live frame's three fields; cannot occur in an epoch or an id.
SEP = b" "
# The epoch field of a chat message's live frames (its numbers have no epoch).
MESSAGE_EPOCH = b"m"
# The id of the watchdog's synthetic error: not a number, so never a cursor.
WATCHDOG_ID = b"watchdog"

KEEPALIVE = b": ping\n\n"


class FrameError(ValueError):
    """Bytes on a live channel that are not a frame Herald's publishers write."""


class Frame(NamedTuple):
    """A decoded live frame.  ``previous`` is ``b""`` for a stream's first entry."""

    epoch: bytes
    previous: bytes
    id: bytes
    envelope: bytes


def envelope_id(envelope: bytes) -> bytes:
    """The id of a spliced envelope, read from its fixed head without parsing JSON.
    Raises ``FrameError`` if the bytes do not start with the head."""
    if not envelope.startswith(HEAD):
        raise FrameError("envelope does not start with the Herald head")
    end = envelope.find(b'"', len(HEAD))
    if end < 0:
        raise FrameError("envelope id is not terminated")
    return envelope[len(HEAD) : end]


def encode_frame(epoch: bytes, previous: bytes, envelope: bytes) -> bytes:
    """What the publish scripts send (Python publishes the same, e.g. a republish)."""
    return epoch + SEP + previous + SEP + envelope


def decode_frame(frame: bytes) -> Frame:
    """Split a live frame; ``FrameError`` if it is malformed (never a bare ValueError
    or IndexError, so a reader can drop one bad frame and go on)."""
    parts = frame.split(SEP, 2)
    if len(parts) != 3:
        raise FrameError("a live frame has three fields: epoch, previous id, envelope")
    epoch, previous, envelope = parts
    if not epoch:
        raise FrameError("live frame without an epoch")
    id_ = envelope_id(envelope)
    if not id_:
        raise FrameError("live frame whose envelope has an empty id")
    return Frame(epoch, previous, id_, envelope)


def lua_frame_args() -> tuple[bytes, bytes]:
    """``HEAD`` and ``SEP`` as the publish scripts take them (see their ARGV docs)."""
    return HEAD, SEP


# -- SSE ----------------------------------------------------------------------


def sse_frame(event_id: str, data: bytes) -> bytes:
    """One SSE event with an ``id:`` (the client's resume cursor).  ``data`` is one
    line of JSON: orjson never writes a newline, so no splitting is needed."""
    return b"id: " + event_id.encode() + b"\ndata: " + data + b"\n\n"


def sse_event_tail(data: bytes) -> bytes:
    """The part of ``sse_frame(event_id, data)`` after the id: the same bytes for
    every subscriber of a message, so a fan-out encodes it once."""
    return b"\ndata: " + data + b"\n\n"


def sse_data(data: bytes) -> bytes:
    """One SSE event without an ``id:``: the client's cursor stays where it was."""
    return b"data: " + data + b"\n\n"


def retry_field(retry_ms: int) -> bytes:
    """Sent at connect: how long EventSource waits before reconnecting."""
    return b"retry: " + str(int(retry_ms)).encode() + b"\n\n"


def gap_envelope(subject: str, data: Mapping[str, object], time: str) -> bytes:
    """A ``herald.gap`` control envelope; plain ``message`` type so ``onmessage`` sees it.
    ``time`` is already formatted (RFC 3339, see ``envelope.format_time``).

    Its id is ``gap-<random>``: it is no position (the SSE ``id:`` of its frame, the
    cursor, is), and two gaps sent at one cursor must not look like one event to a
    consumer that de-duplicates on ``source`` + ``id``."""
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": f"gap-{secrets.token_hex(8)}",
            "source": "/herald",
            "type": "herald.gap",
            "time": time,
            "subject": subject,
            "datacontenttype": "application/json",
            "data": dict(data),
        }
    )


def watchdog_envelope(tail: bytes) -> bytes:
    """The message watchdog's synthetic terminal ``error``, from an envelope tail
    (everything after the id, as ``messages.store.message_envelope`` gives it).  Its
    id is ``watchdog-<random>``, unique like every CloudEvents id."""
    return HEAD + WATCHDOG_ID + b"-" + secrets.token_hex(8).encode() + tail

"""CloudEvents 1.0 structured-mode envelopes, serialised once with orjson.

An envelope's ``id`` is its position in its stream, which only the journal knows
at append time.  So a publish is prepared in two halves: :func:`prepare` validates
and serialises everything except the id into ``Prepared.tail``, and the journal
splices the id in front (:func:`splice`) — in Lua for Redis — without parsing or
re-serialising the JSON.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson

from herald.journal.wire import HEAD, envelope_id

__all__ = [
    "HEAD",
    "Envelope",
    "EnvelopeError",
    "EnvelopeTooLarge",
    "InvalidEnvelope",
    "Prepared",
    "decode",
    "envelope_id",
    "format_time",
    "prepare",
    "splice",
    "stream_source",
    "valid_source",
]

TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
_MAX_SOURCE = 512
# RFC 3986 URI-reference without query or fragment (so a stream path can follow):
# an optional scheme, then path characters and %XX escapes.
_SOURCE_RE = re.compile(
    r"(?:[A-Za-z][A-Za-z0-9+.-]*:)?(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})+"
)
# Name characters that may stand in a path segment as they are ('|' is escaped).
_SEGMENT_SAFE = "@:+=-._"
_MAX_SUBJECT = 512


class EnvelopeError(Exception):
    """Base of the envelope errors; ``code`` is a stable machine-readable reason."""

    code = "invalid_envelope"


class InvalidEnvelope(EnvelopeError):
    """The type, source, subject or data is not acceptable."""


class EnvelopeTooLarge(EnvelopeError):
    """The serialised envelope exceeds the configured limit."""

    code = "envelope_too_large"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"envelope is {size} bytes; the limit is {limit} bytes")
        self.size = size
        self.limit = limit


def format_time(t: datetime) -> str:
    """RFC 3339 UTC with millisecond precision and a ``Z``; naive datetimes are refused."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError("naive datetime: Herald only handles timezone-aware UTC")
    if t.tzinfo is not UTC:
        t = t.astimezone(UTC)
    # isoformat is twice as fast as strftime; in UTC it always ends with "+00:00".
    return t.isoformat(timespec="milliseconds")[:-6] + "Z"


@dataclass(frozen=True, slots=True)
class Prepared:
    """A validated envelope without its id: ``HEAD + id + tail`` is the whole JSON."""

    type: str
    tail: bytes  # starts with '",' and ends with '}'

    def with_id(self, id_: str) -> bytes:
        return splice(id_, self.tail)


def splice(id_: str, tail: bytes) -> bytes:
    return HEAD + id_.encode() + tail


def valid_source(source: str) -> bool:
    """A CloudEvents ``source`` Herald accepts: a URI-reference (RFC 3986) of at most
    512 characters, with no query or fragment."""
    return 0 < len(source) <= _MAX_SOURCE and _SOURCE_RE.fullmatch(source) is not None


def stream_source(base: str, kind: str, name: str) -> str:
    """The ``source`` of an envelope in one stream: ``<base>/users/<user>``,
    ``<base>/topics/<topic>`` or ``<base>/messages/<id>``.  Ids are positions in their
    stream, so ``source`` + ``id`` is unique across streams, as CloudEvents requires."""
    return f"{base.rstrip('/')}/{kind}/{quote(name, safe=_SEGMENT_SAFE)}"


def prepare(
    type_: str,
    data: Any,
    *,
    source: str,
    subject: str | None,
    max_bytes: int,
    time: datetime | None = None,
    time_text: str | None = None,
    id_room: int = 41,
) -> Prepared:
    """Validate and serialise an envelope, leaving room for an id of ``id_room`` bytes.

    ``time_text`` is an already formatted ``time`` (a batch formats it once).
    Raises ``InvalidEnvelope`` (type pattern, data not an object, data not JSON-able)
    or ``EnvelopeTooLarge`` (the size check counts the longest id the stream can give).
    """
    if not isinstance(type_, str) or not TYPE_RE.fullmatch(type_):
        raise InvalidEnvelope(
            f"type {type_!r} must match {TYPE_RE.pattern} (e.g. 'source.ingest.progress')"
        )
    if not isinstance(data, dict):
        raise InvalidEnvelope(f"data must be a JSON object, not {type(data).__name__}")
    if not valid_source(source):
        raise InvalidEnvelope(
            f"source {source[:80]!r} must be a URI-reference of 1..{_MAX_SOURCE} characters "
            "without query or fragment (e.g. '/workers/ingest')"
        )
    if subject is not None and len(subject) > _MAX_SUBJECT:
        raise InvalidEnvelope(f"subject must be at most {_MAX_SUBJECT} characters")
    body: dict[str, Any] = {
        "source": source,
        "type": type_,
        "time": time_text or format_time(time or datetime.now(UTC)),
    }
    if subject is not None:
        body["subject"] = subject
    body["datacontenttype"] = "application/json"
    body["data"] = data
    try:
        # OPT_NON_STR_KEYS would silently turn {1: x} into {"1": x}; refuse instead.
        raw = orjson.dumps(body)
    except TypeError as e:
        raise InvalidEnvelope(f"data is not JSON-serialisable: {e}") from e
    tail = b'",' + raw[1:]
    size = len(HEAD) + id_room + len(tail)
    if size > max_bytes:
        raise EnvelopeTooLarge(size, max_bytes)
    return Prepared(type_, tail)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded envelope, for readers that need fields rather than bytes."""

    id: str
    source: str
    type: str
    time: str
    data: dict[str, Any]
    subject: str | None = None


def decode(raw: bytes | str) -> Envelope:
    """Parse envelope JSON; raise ``InvalidEnvelope`` if it is not a Herald envelope."""
    try:
        d = orjson.loads(raw)
        return Envelope(
            id=d["id"],
            source=d["source"],
            type=d["type"],
            time=d["time"],
            data=d["data"],
            subject=d.get("subject"),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError) as e:
        raise InvalidEnvelope(f"not a Herald envelope: {e}") from e

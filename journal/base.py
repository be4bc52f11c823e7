"""The journal interface: durable, ordered, replayable streams with atomic live publish.

Two implementations honour it and pass one contract suite (``tests/contract``):
``journal.memory.MemoryJournal`` (one process, tests and demos) and
``journal.redis.RedisJournal`` (Redis Streams + pub/sub, one Lua round trip).

Ordering rule (the contract every reader relies on): within one stream, ids
strictly increase in publish order; an envelope is readable from the journal
if and only if it was handed to live subscribers, and each live message carries
the id of the entry before it, so a subscriber can detect a hole.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from herald.journal.envelope import (
    EnvelopeError,
    EnvelopeTooLarge,
    InvalidEnvelope,
    Prepared,
    format_time,
    prepare,
    stream_source,
)
from herald.journal.positions import StreamId, Target

__all__ = [
    "Entry",
    "Journal",
    "JournalError",
    "JournalLimits",
    "JournalUnavailable",
    "Page",
    "PublishOutcome",
    "PublishRequest",
    "PublishResult",
    "StreamInfo",
    "try_publish",
]

log = logging.getLogger("herald.journal")


class JournalError(Exception):
    """Base of the journal's own errors."""

    code = "journal_error"


class JournalUnavailable(JournalError):
    """The store could not be reached or did not answer in time; nothing was published."""

    code = "journal_unavailable"


@dataclass(frozen=True, slots=True)
class JournalLimits:
    max_envelope_bytes: int = 65536
    stream_maxlen: int = 10000
    idempotency_window_s: int = 300
    default_source: str = "/herald"


@dataclass(frozen=True, slots=True)
class PublishRequest:
    target: Target
    type: str
    data: dict[str, Any]
    source: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class PublishResult:
    id: StreamId
    target: Target
    previous: StreamId | None  # None for the first entry of a stream, or a duplicate
    duplicate: bool  # the idempotency key was seen: nothing was written
    epoch: str


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal entry: the envelope bytes plus what readers need without parsing them."""

    id: StreamId
    previous: StreamId | None
    type: str
    envelope: bytes


@dataclass(frozen=True, slots=True)
class Page:
    """Entries read in one call, with the stream's epoch at that moment (None: no stream)."""

    epoch: str | None
    entries: list[Entry]


@dataclass(frozen=True, slots=True)
class StreamInfo:
    epoch: str | None  # None: the stream has never been written
    last: StreamId | None
    first: StreamId | None
    length: int


@dataclass(frozen=True, slots=True)
class PublishOutcome:
    """What the fire-and-forget helper returns: either a result or why there is none."""

    result: PublishResult | None
    reason: Literal["ok", "unavailable", "too_large", "invalid"] = "ok"
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.result is not None


class Journal(Protocol):
    limits: JournalLimits

    async def publish(
        self,
        target: Target,
        type_: str,
        data: dict[str, Any],
        *,
        source: str | None = None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        """Append and publish one envelope atomically.

        Raises ``InvalidEnvelope`` / ``EnvelopeTooLarge`` before touching the store,
        ``JournalUnavailable`` if the store cannot be reached (then nothing happened).
        A repeated idempotency key within the window returns the first result with
        ``duplicate=True`` and writes nothing.
        """
        ...

    async def publish_many(self, requests: Sequence[PublishRequest]) -> list[PublishResult]:
        """Publish a batch in one round trip; results in request order.

        Validation happens for the whole batch first: one bad envelope raises and
        nothing is published.  Envelopes for the same stream keep their order.
        """
        ...

    async def read_after(self, target: Target, after: StreamId, *, limit: int) -> Page:
        """Up to ``limit`` entries with id > ``after``, oldest first, and the epoch they
        belong to — read together, so a reader can tell a lost stream from a new one."""
        ...

    async def latest(
        self, target: Target, type_prefix: str, *, max_scan: int = 10000
    ) -> Entry | None:
        """The newest entry whose type starts with ``type_prefix``, walking back at most
        ``max_scan`` entries."""
        ...

    async def info(self, target: Target) -> StreamInfo: ...

    async def aclose(self) -> None: ...


def new_epoch() -> str:
    """A fresh stream epoch; a stream gets a new one whenever its metadata is lost."""
    return secrets.token_hex(6)


def prepare_requests(limits: JournalLimits, requests: Sequence[PublishRequest]) -> list[Prepared]:
    """Validate and serialise a batch; the first bad request raises."""
    out = []
    # One timestamp per batch: the batch is published in one round trip, and
    # formatting the time per envelope was a third of the client's cost.
    now = format_time(datetime.now(UTC))
    for r in requests:
        if r.idempotency_key is not None and not 1 <= len(r.idempotency_key) <= 200:
            raise InvalidEnvelope("idempotency_key must be 1..200 characters")
        out.append(
            prepare(
                r.type,
                r.data,
                # The publisher's source (or the default) names who published;
                # the stream path after it makes source + id unique.
                source=stream_source(
                    r.source or limits.default_source,
                    "users" if r.target.kind == "u" else "topics",
                    r.target.name,
                ),
                subject=str(r.target),
                max_bytes=limits.max_envelope_bytes,
                time_text=now,
            )
        )
    return out


async def try_publish(
    journal: Journal,
    target: Target,
    type_: str,
    data: dict[str, Any],
    *,
    source: str | None = None,
    idempotency_key: str | None = None,
) -> PublishOutcome:
    """Fire-and-forget publish: never raises; the outcome says why nothing was published."""
    try:
        result = await journal.publish(
            target, type_, data, source=source, idempotency_key=idempotency_key
        )
    except EnvelopeTooLarge as e:
        return PublishOutcome(None, "too_large", str(e))
    except EnvelopeError as e:
        return PublishOutcome(None, "invalid", str(e))
    except JournalUnavailable as e:
        log.warning("publish of %s to %s dropped: %s", type_, target, e)
        return PublishOutcome(None, "unavailable", str(e))
    except Exception as e:  # the helper's promise is "never raises"
        log.exception("publish of %s to %s failed", type_, target)
        return PublishOutcome(None, "unavailable", f"{type(e).__name__}: {e}")
    return PublishOutcome(result)

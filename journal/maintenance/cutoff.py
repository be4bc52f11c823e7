"""Retention cutoffs: an instant in UTC that can only be built from a timezone-aware
datetime, so comparing it with a naive value is impossible by construction.

A naive datetime has no instant: PostgreSQL reads it in the session's time zone,
Python refuses to compare it with an aware one at some later, unrelated line.
``Cutoff`` refuses it at the door, with an error that names the mistake.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["Cutoff", "NaiveDatetime", "require_aware", "utc_now"]


class NaiveDatetime(TypeError):
    """A datetime without a time zone was given where an instant is required."""


def require_aware(value: datetime, what: str = "datetime") -> datetime:
    """``value`` in UTC; raises ``NaiveDatetime`` if it has no time zone."""
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveDatetime(
            f"{what} {value.isoformat()} is naive (no time zone); pass an aware datetime, "
            "e.g. datetime.now(UTC)"
        )
    return value.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Cutoff:
    """Everything strictly before ``at`` (UTC) is past retention."""

    at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", require_aware(self.at, "cutoff"))

    @classmethod
    def older_than(cls, age_s: float, now: datetime) -> Cutoff:
        """The cutoff ``age_s`` seconds before ``now`` (which must be aware)."""
        if age_s < 0:
            raise ValueError("a retention age cannot be negative")
        return cls(require_aware(now, "now") - timedelta(seconds=age_s))

    def expired(self, value: datetime) -> bool:
        """Whether ``value`` is past retention; a naive ``value`` raises ``NaiveDatetime``."""
        return require_aware(value, "compared datetime") < self.at

    @property
    def ms(self) -> int:
        """Unix milliseconds, the time part of a Redis Stream id."""
        return int(self.at.timestamp() * 1000)

    @property
    def min_stream_id(self) -> str:
        """The ``XTRIM … MINID`` argument: entries with smaller ids were added before ``at``."""
        return f"{max(0, self.ms)}-0"

    def __str__(self) -> str:
        return self.at.isoformat()

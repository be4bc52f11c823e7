"""When a maintenance job runs: a cron expression in an IANA time zone.

Five fields (minute hour day-of-month month day-of-week), or six with a leading
seconds field (meant for tests: ``* * * * * *`` is every second).  Parsing and
iteration are cronsim's, which follows Debian cron across DST changes for jobs at
fixed times: a time the spring-forward skips runs once at the first minute after
the jump, a time the fall-back repeats runs once (its first occurrence).  A
six-field schedule whose seconds field is one number gets the same rules (it is
the five-field schedule shifted by those seconds); one with a seconds range or
step simply follows real time.

Every instant going in must be timezone-aware and every instant coming out is
UTC: a tick is identified by its UTC instant, so replicas in different local
zones agree on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from herald.journal.maintenance.cutoff import require_aware

__all__ = ["InvalidSchedule", "InvalidTimezone", "Schedule", "zone"]

MAX_CRON_CHARS = 200


class InvalidSchedule(ValueError):
    """The cron expression cannot be parsed; the message is the parser's reason."""

    code = "invalid_schedule"


class InvalidTimezone(ValueError):
    code = "invalid_timezone"


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name`` (e.g. ``Europe/Berlin``); raises ``InvalidTimezone``."""
    if not name or len(name) > 100 or name.startswith(("/", ".")) or ".." in name:
        raise InvalidTimezone(f"{name!r} is not an IANA time zone name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise InvalidTimezone(f"{name!r} is not an IANA time zone name") from e


@dataclass(frozen=True, slots=True)
class Schedule:
    """A parsed, valid schedule.  Raises ``InvalidSchedule`` / ``InvalidTimezone``."""

    cron: str
    timezone: str = "UTC"
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _expr: str = field(init=False, repr=False, compare=False)  # what cronsim iterates
    _shift: timedelta = field(init=False, repr=False, compare=False)  # added to its ticks

    def __post_init__(self) -> None:
        object.__setattr__(self, "_zone", zone(self.timezone))
        if not isinstance(self.cron, str) or len(self.cron) > MAX_CRON_CHARS:
            raise InvalidSchedule(f"a cron expression is a string of at most {MAX_CRON_CHARS}")
        parts = self.cron.split()
        if len(parts) not in (5, 6):
            raise InvalidSchedule(
                f"{self.cron!r}: expected 5 fields (minute hour day month weekday) "
                f"or 6 (a leading seconds field), got {len(parts)}"
            )
        expr, shift = " ".join(parts), timedelta(0)
        if len(parts) == 6 and parts[0].isdecimal() and int(parts[0]) < 60:
            # A fixed second: the five-field schedule, shifted, keeps cron's DST rules.
            expr, shift = " ".join(parts[1:]), timedelta(seconds=int(parts[0]))
        try:
            CronSim(expr, datetime.now(self._zone))
        except (CronSimError, ValueError) as e:
            raise InvalidSchedule(f"{self.cron!r}: {e}") from e
        object.__setattr__(self, "_expr", expr)
        object.__setattr__(self, "_shift", shift)

    @property
    def zone(self) -> ZoneInfo:
        return self._zone

    def ticks(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Every tick in (``after``, ``until``], in order, as UTC datetimes."""
        after = require_aware(after, "after")
        until = require_aware(until, "until")
        if until <= after:
            return
        local = (after - self._shift).astimezone(self._zone)
        for raw in CronSim(self._expr, local):
            tick = raw.astimezone(UTC) + self._shift
            if tick <= after:
                # cronsim iterates wall-clock time: starting inside a repeated
                # (fall-back) hour it can name an instant we are already past.
                continue
            if tick > until:
                return
            yield tick

    def next_after(self, after: datetime) -> datetime:
        """The first tick strictly after ``after`` (UTC)."""
        after = require_aware(after, "after")
        for tick in self.ticks(after, datetime.max.replace(tzinfo=UTC) - timedelta(days=2)):
            return tick
        raise InvalidSchedule(f"{self.cron!r} never fires")  # pragma: no cover

    def last_tick(self, after: datetime, until: datetime) -> datetime | None:
        """The newest tick in (``after``, ``until``], or None.  Searches backwards from
        ``until`` in widening windows, so a long gap costs no walk over every tick."""
        after, until = require_aware(after, "after"), require_aware(until, "until")
        span = timedelta(hours=1)
        while True:
            start = after if span >= until - after else until - span
            newest = None
            for tick in self.ticks(start, until):
                newest = tick
            if newest is not None or start == after:
                return newest
            span *= 4

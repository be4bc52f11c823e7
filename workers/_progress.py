"""Progress throttling: a pure rule, so it is tested with tables, not timers."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ProgressThrottle"]


@dataclass(slots=True)
class ProgressThrottle:
    """Decides which ``ctx.progress(current, total)`` calls become events.

    At most one event per whole percent (a call that does not reach a new percent
    is dropped), at most ``per_second`` events a second, and 100 % always goes
    through (once).  A changed ``total`` starts a new series: the task moved to
    another phase.  Without a usable total (``total <= 0``) only the rate applies,
    and only when ``current`` changed.
    """

    per_second: float = 10.0
    _total: int | None = None
    _percent: int = -1
    _current: int | None = None
    _sent_at: float | None = None

    def allow(self, current: int, total: int, now: float) -> bool:
        if total != self._total:
            self._total, self._percent, self._current = total, -1, None
        if total > 0:
            percent = max(0, min(100, current * 100 // total))
            if percent <= self._percent:
                return False
            final = percent == 100
        else:
            if current == self._current:
                return False
            percent, final = self._percent, False
        if not final and self._sent_at is not None and now - self._sent_at < 1 / self.per_second:
            return False
        self._percent, self._current, self._sent_at = percent, current, now
        return True

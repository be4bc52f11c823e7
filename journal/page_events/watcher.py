"""Announces windows opening and closing, in every API process, each once.

A pass claims every due transition (``PageEventStore.claim_transitions``: the
database decides which process publishes) and then sleeps until the next start
or end of any active event, at most ``HERALD_PAGE_EVENTS_POLL_S``; a change made
through this process wakes it at once (``wake()``), a change made elsewhere is
seen within the poll.  A transition missed while no process ran is still
announced when it is at most ``HERALD_PAGE_EVENTS_CATCHUP_S`` old.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Final

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from herald.journal.base import Journal, JournalUnavailable
from herald.journal.envelope import format_time
from herald.journal.maintenance.cutoff import require_aware, utc_now
from herald.journal.page_events.events import change_data, transition_key
from herald.journal.page_events.keys import EVENT_TYPE, TOPIC
from herald.journal.page_events.store import PageEventStore, Transition
from herald.journal.positions import Target
from herald.journal.runtime.db import DatabaseUnavailable

__all__ = ["WindowWatcher"]

log = logging.getLogger("herald.page_events")

# Past the instant by this much before a pass: waking early would find nothing due.
WAKE_LATE_S: Final = 0.005
_FAULTS = (SQLAlchemyError, DatabaseUnavailable, RedisError, OSError, JournalUnavailable)


class WindowWatcher:
    def __init__(
        self,
        store: PageEventStore,
        journal: Journal,
        *,
        watcher_id: str,
        poll_s: float,
        catchup_s: float,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.journal = journal
        self.id = watcher_id
        self.poll_s = poll_s
        self.catchup_s = catchup_s
        self.clock = clock
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def announce(self, transition: Transition) -> None:
        data = change_data(transition.uid, transition.page_context, transition.change)
        data["at"] = format_time(transition.at)
        await self.journal.publish(
            Target.topic(TOPIC),
            EVENT_TYPE,
            data,
            idempotency_key=transition_key(transition.uid, transition.change, transition.at),
        )

    async def run_pass(self) -> tuple[list[Transition], datetime | None]:
        """Claim and announce what is due now → (claimed here, next due instant)."""
        now = require_aware(self.clock(), "clock()")
        claimed = await self.store.claim_transitions(now, self.catchup_s, self.id, self.announce)
        return claimed, await self.store.next_due(now)

    def wake(self) -> None:
        """Re-plan now (an event changed)."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="page-event-watcher")

    async def aclose(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            task, self._task = self._task, None
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        pause = 0.1
        while not self._stop.is_set():
            self._wake.clear()
            try:
                claimed, next_due = await self.run_pass()
            except _FAULTS as e:
                log.warning("page event watcher pass failed (%s); retrying in %.1f s", e, pause)
                await self._sleep(pause)
                pause = min(pause * 2, self.poll_s)
                continue
            except Exception:
                log.exception("page event watcher pass failed")
                await self._sleep(self.poll_s)
                continue
            pause = 0.1
            for t in claimed:
                log.info("page event %s: %s at %s", t.uid, t.change, t.at.isoformat())
            await self._sleep(self._delay(next_due))

    def _delay(self, next_due: datetime | None) -> float:
        if next_due is None:
            return self.poll_s
        wait = (next_due - self.clock()).total_seconds() + WAKE_LATE_S
        return min(self.poll_s, max(0.0, wait))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

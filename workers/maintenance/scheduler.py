"""The maintenance scheduler: claims each due tick of each enabled job, and
fails runs that stopped heartbeating.

Any number of schedulers may run against one database; none leads.  Each pass
reads the enabled jobs and, per job, the newest tick it has a run for, works out
which ticks are due (``plan``) and claims each through the store (``INSERT … ON
CONFLICT (job_id, scheduled_for) DO NOTHING``): the scheduler whose insert wins
hands the run to the task queue in the same transaction, the others do nothing.
A pass also marks ``failed`` (``abandoned``) every running run whose heartbeat is
older than ``HERALD_MAINTENANCE_STALE_S`` and records the scheduler's own
heartbeat for readiness.  Between passes it sleeps until the next tick of any job
(at most ``HERALD_SCHEDULER_POLL_S``).

Due ticks (``plan``): a tick less than ``ON_TIME_S`` old is on time and gets its
own run — a scheduler that is merely slow still runs every tick.  Ticks older
than that passed while no scheduler was running: only the newest of them is
recorded, run once as a catch-up when it is at most
``HERALD_SCHEDULER_CATCHUP_S`` old and no on-time tick follows it, else recorded
as ``skipped``.  A job is due from its newest recorded tick, or from when it was
last changed (so enabling a job never catches up ticks from while it was off).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from herald.journal.base import Journal, JournalUnavailable
from herald.journal.envelope import format_time
from herald.journal.maintenance.cutoff import require_aware, utc_now
from herald.journal.maintenance.events import (
    dispatcher,
    record_scheduler_pass,
    try_publish_run_event,
)
from herald.journal.maintenance.models import Run
from herald.journal.maintenance.schedule import Schedule
from herald.journal.maintenance.store import DispatchFailed, MaintenanceStore
from herald.journal.runtime.db import DatabaseUnavailable
from herald.journal.runtime.metrics import MAINTENANCE_RUNS
from herald.journal.runtime.settings import Settings
from herald.journal.tasks.queue import TaskQueue, TaskQueueError
from herald.workers._support import default_consumer_name

__all__ = ["ON_TIME_S", "Decision", "PassReport", "Scheduler", "plan"]

log = logging.getLogger("herald.scheduler")

ON_TIME_S: Final = 60.0
# Past a tick's instant by this much before it counts as due: waking a hair late is
# harmless, waking early would find the tick not yet due and sleep again.
WAKE_LATE_S: Final = 0.005
_FAULTS = (
    SQLAlchemyError,
    DatabaseUnavailable,
    RedisError,
    OSError,
    TaskQueueError,
    JournalUnavailable,
    DispatchFailed,
)


@dataclass(frozen=True, slots=True)
class Decision:
    """Claim ``tick``: run it, or (``skip`` says why) record it as skipped."""

    tick: datetime
    skip: str | None = None
    note: str | None = None  # kept as the run's message (a catch-up says so)
    result: dict[str, Any] | None = None


def plan(
    schedule: Schedule, reference: datetime, now: datetime, catchup_s: float
) -> list[Decision]:
    """The ticks of ``schedule`` after ``reference`` that are due at ``now``, oldest
    first, with what to do about each (see the module's docstring).  Pure."""
    reference, now = require_aware(reference, "reference"), require_aware(now, "now")
    first = schedule.next_after(reference)
    if first > now:
        return []
    late_edge = now - timedelta(seconds=ON_TIME_S)
    if first > late_edge:
        return [Decision(t) for t in schedule.ticks(reference, now)]
    on_time = [Decision(t) for t in schedule.ticks(late_edge, now)]
    missed = schedule.last_tick(reference, late_edge)
    assert missed is not None  # ``first`` is one
    since = f"no scheduler ran from {format_time(first)}"
    info = {"missed_from": format_time(first), "missed_until": format_time(missed)}
    if on_time:
        decision = Decision(missed, skip=f"skipped: {since}; a newer tick runs", result=info)
    elif (now - missed).total_seconds() <= catchup_s:
        decision = Decision(missed, note=f"catch-up: {since}")
    else:
        reason = f"skipped: {since}; older than the catch-up window ({catchup_s:g} s)"
        decision = Decision(missed, skip=reason, result=info)
    return [decision, *on_time]


@dataclass(slots=True)
class PassReport:
    """What one pass did (for logs and tests)."""

    runs: list[Run] = field(default_factory=list)  # claimed by this scheduler
    reaped: list[Run] = field(default_factory=list)
    next_due: datetime | None = None


class Scheduler:
    """Runs passes until ``request_stop()``.  ``clock`` returns an aware "now"."""

    def __init__(
        self,
        store: MaintenanceStore,
        tasks: TaskQueue,
        *,
        journal: Journal,
        redis: aioredis.Redis,
        settings: Settings,
        clock: Callable[[], datetime] = utc_now,
        scheduler_id: str | None = None,
    ) -> None:
        self.store = store
        self.journal = journal
        self.redis = redis
        self.settings = settings
        self.clock = clock
        self.id = scheduler_id or default_consumer_name()
        self._dispatch = dispatcher(tasks, settings)
        self._stop = asyncio.Event()
        if settings.maintenance_stale_s <= settings.task_visibility_timeout_s:
            log.warning(
                "HERALD_MAINTENANCE_STALE_S (%s) is not above HERALD_TASK_VISIBILITY_TIMEOUT_S "
                "(%s): a run whose worker died may be marked abandoned before another worker "
                "takes it over",
                settings.maintenance_stale_s,
                settings.task_visibility_timeout_s,
            )

    def request_stop(self) -> None:
        """Stop after the current pass; safe from a signal handler on the loop."""
        self._stop.set()

    async def run(self) -> None:
        pause = 0.1
        while not self._stop.is_set():
            try:
                report = await self.run_pass()
            except _FAULTS as e:
                log.warning("scheduler pass failed (%s); retrying in %.1f s", e, pause)
                await self._sleep(pause)
                pause = min(pause * 2, self.settings.scheduler_poll_s)
                continue
            pause = 0.1
            await self._sleep(self._delay(report.next_due))

    async def run_pass(self) -> PassReport:
        """Claim every due tick, reap stale runs, heartbeat.  Raises on faults."""
        now = require_aware(self.clock(), "clock()")
        report = PassReport()
        upcoming: list[datetime] = []
        for job, last_tick in await self.store.scheduled_jobs():
            schedule = job.schedule
            if schedule is None:
                log.error("job %s has an unusable schedule %r", job.key, job.schedule_cron)
                continue
            reference = max(t for t in (last_tick, job.updated_at) if t is not None)
            for decision in plan(schedule, reference, now, self.settings.scheduler_catchup_s):
                run = await self.store.claim_tick(
                    job,
                    decision.tick,
                    self._dispatch,
                    skip=decision.skip,
                    note=decision.note,
                    result=decision.result,
                )
                if run is None:
                    continue  # another scheduler claimed it
                report.runs.append(run)
                if run.status == "skipped":
                    MAINTENANCE_RUNS.labels(run.job_type[:64], "skipped").inc()
                    await try_publish_run_event(self.journal, run, "skipped")
            upcoming.append(schedule.next_after(now))
        report.reaped = await self.store.reap(self.settings.maintenance_stale_s)
        for run in report.reaped:
            log.warning("run %s of %s abandoned: no heartbeat", run.id, run.job_key)
            MAINTENANCE_RUNS.labels(run.job_type[:64], "failed").inc()
            await try_publish_run_event(self.journal, run, "failed")
        await record_scheduler_pass(self.redis, self.id, 10 * self.settings.scheduler_stale_s)
        report.next_due = min(upcoming, default=None)
        return report

    def _delay(self, next_due: datetime | None) -> float:
        poll = self.settings.scheduler_poll_s
        if next_due is None:
            return poll
        wait = (next_due - self.clock()).total_seconds() + WAKE_LATE_S
        return min(poll, max(0.0, wait))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

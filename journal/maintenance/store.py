"""Maintenance jobs and runs in PostgreSQL: what the API reads, what the scheduler
and the worker write.

Exactly one run per (job, tick) is the database's decision: a scheduler claims a
tick with ``INSERT … ON CONFLICT (job_id, scheduled_for) DO NOTHING`` and only the
replica whose insert wins runs it.  A job never runs twice at once: a second
``running`` row of one job violates a partial unique index, whoever inserts it.

A claimed run is handed to the task queue (``dispatch``) *inside* the claiming
transaction, under an advisory lock on the run's id that the worker takes before it
reads the run.  So the task can never find its run not yet committed, a claim whose
enqueue failed is rolled back (the tick stays free), and a task whose claim was
rolled back finds no run and does nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Final

from sqlalchemy import case, func, insert, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB, distinct_on
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from herald.journal.maintenance.cutoff import require_aware
from herald.journal.maintenance.models import Job, Run, RunStatus
from herald.journal.maintenance.rows import (
    DispatchFailed,
    JobRunning,
    UnknownJob,
    advisory_key,
    constraint_of,
    hand_over,
    is_running,
    job_of,
    lock_run,
    run_of,
    runs_of,
)
from herald.journal.maintenance.schedule import Schedule
from herald.journal.runtime.db import run_in_transaction
from herald.journal.tables import maintenance_jobs as jobs
from herald.journal.tables import maintenance_runs as runs

__all__ = ["DispatchFailed", "JobRunning", "MaintenanceStore", "UnknownJob", "advisory_key"]

ONE_RUNNING: Final = "uq_maintenance_runs_one_running"
OVERLAP_MESSAGE: Final = "skipped: the previous run of this job was still running"
Dispatch = Callable[[Run], Awaitable[None]]
# What a job's PATCH may change.
EDITABLE: Final = frozenset({"enabled", "schedule_cron", "timezone", "params"})


class MaintenanceStore:
    """Every query of the maintenance tables; each method is one transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # -- jobs --------------------------------------------------------------------

    async def create_job(
        self,
        key: str,
        job_type: str,
        *,
        schedule_cron: str | None = None,
        timezone: str = "UTC",
        enabled: bool = True,
        visible_in_ui: bool = True,
        params: dict[str, Any] | None = None,
    ) -> Job:
        """Add a job (its schedule validated first); IntegrityError if the key exists."""
        if schedule_cron is not None:
            Schedule(schedule_cron, timezone)
        values = {
            "key": key,
            "job_type": job_type,
            "schedule_cron": schedule_cron,
            "timezone": timezone,
            "enabled": enabled,
            "visible_in_ui": visible_in_ui,
            "params": params or {},
        }

        async def work(conn: AsyncConnection) -> Job:
            row = (await conn.execute(insert(jobs).values(**values).returning(jobs))).one()
            return job_of(row)

        return await run_in_transaction(self.engine, work)

    async def job(self, key: str) -> Job | None:
        async def work(conn: AsyncConnection) -> Job | None:
            row = (await conn.execute(select(jobs).where(jobs.c.key == key))).first()
            return None if row is None else job_of(row)

        return await run_in_transaction(self.engine, work)

    async def jobs(self, *, visible: bool | None = True) -> list[tuple[Job, Run | None]]:
        """Jobs by key (only those with ``visible_in_ui == visible``, or all for None),
        each with its newest run."""
        query = select(jobs).order_by(jobs.c.key)
        if visible is not None:
            query = query.where(jobs.c.visible_in_ui.is_(visible))

        async def work(conn: AsyncConnection) -> list[tuple[Job, Run | None]]:
            found = [job_of(row) for row in await conn.execute(query)]
            newest = (
                runs_of(runs)
                .where(runs.c.job_id.in_([j.id for j in found]))
                .order_by(runs.c.job_id, runs.c.created_at.desc())
                .ext(distinct_on(runs.c.job_id))
            )
            last = {r.job_id: r for r in map(run_of, await conn.execute(newest))} if found else {}
            return [(job, last.get(job.id)) for job in found]

        return await run_in_transaction(self.engine, work)

    async def job_with_last_run(self, key: str) -> tuple[Job, Run | None] | None:
        async def work(conn: AsyncConnection) -> tuple[Job, Run | None] | None:
            row = (await conn.execute(select(jobs).where(jobs.c.key == key))).first()
            if row is None:
                return None
            newest = (
                runs_of(runs)
                .where(runs.c.job_id == row.id)
                .order_by(runs.c.created_at.desc())
                .limit(1)
            )
            last = (await conn.execute(newest)).first()
            return job_of(row), (None if last is None else run_of(last))

        return await run_in_transaction(self.engine, work)

    async def update_job(self, key: str, changes: dict[str, Any]) -> Job:
        """Change ``enabled``, ``schedule_cron``, ``timezone`` or ``params``; the
        schedule (with its time zone) is validated first.  Raises ``UnknownJob``."""
        unknown = set(changes) - EDITABLE
        if unknown:
            raise ValueError(f"not editable: {', '.join(sorted(unknown))}")

        async def work(conn: AsyncConnection) -> Job:
            row = (
                await conn.execute(select(jobs).where(jobs.c.key == key).with_for_update())
            ).first()
            if row is None:
                raise UnknownJob(f"no maintenance job {key!r}")
            cron = changes.get("schedule_cron", row.schedule_cron)
            timezone = changes.get("timezone", row.timezone)
            if cron is not None:
                Schedule(cron, timezone)
            else:
                Schedule("0 0 * * *", timezone)  # the zone alone must still be valid
            updated = (
                await conn.execute(
                    update(jobs)
                    .where(jobs.c.id == row.id)
                    .values(**changes, updated_at=func.now())
                    .returning(jobs)
                )
            ).one()
            return job_of(updated)

        return await run_in_transaction(self.engine, work)

    async def scheduled_jobs(self) -> list[tuple[Job, datetime | None]]:
        """Enabled jobs with a schedule, each with the newest tick it has a run for."""
        newest = (
            select(func.max(runs.c.scheduled_for))
            .where(runs.c.job_id == jobs.c.id)
            .scalar_subquery()
        )
        query = (
            select(jobs, newest.label("last_tick"))
            .where(jobs.c.enabled.is_(True), jobs.c.schedule_cron.is_not(None))
            .order_by(jobs.c.id)
        )

        async def work(conn: AsyncConnection) -> list[tuple[Job, datetime | None]]:
            return [(job_of(row), row.last_tick) for row in await conn.execute(query)]

        return await run_in_transaction(self.engine, work)

    # -- claiming runs -------------------------------------------------------------

    async def claim_tick(
        self,
        job: Job,
        tick: datetime,
        dispatch: Dispatch,
        *,
        skip: str | None = None,
        note: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> Run | None:
        """Claim ``job``'s ``tick``: run it (``dispatch``ed in the claiming
        transaction), or with ``skip`` record it as skipped for that reason.  A tick
        due while the job still runs is recorded as skipped too.  None: another
        replica claimed this tick first."""
        tick = require_aware(tick, "tick")
        try:
            return await self._claim(job.id, tick, dispatch, skip, note, result)
        except IntegrityError as e:
            if constraint_of(e) != ONE_RUNNING:
                raise
        # Another tick of this job started between our check and our insert.
        return await self._claim(job.id, tick, dispatch, OVERLAP_MESSAGE, None, None)

    async def _claim(
        self,
        job_id: int,
        tick: datetime,
        dispatch: Dispatch,
        skip: str | None,
        note: str | None,
        result: dict[str, Any] | None,
    ) -> Run | None:
        async def work(conn: AsyncConnection) -> Run | None:
            reason = skip
            if reason is None and await is_running(conn, job_id):
                reason = OVERLAP_MESSAGE
            run_id = uuid.uuid4()  # per attempt: a retried transaction is another claim
            values: dict[str, Any] = {
                "id": run_id,
                "job_id": job_id,
                "trigger": "scheduled",
                "scheduled_for": tick,
                "status": "skipped" if reason else "running",
                "message": reason or note,
                "result": result,
            }
            if reason:
                values["finished_at"] = func.now()
            else:
                await lock_run(conn, run_id)
            claimed = (
                pg_insert(runs)
                .values(**values)
                .on_conflict_do_nothing(index_elements=["job_id", "scheduled_for"])
                .returning(runs)
                .cte("claimed")
            )
            row = (await conn.execute(runs_of(claimed))).first()
            if row is None:
                return None
            run = run_of(row)
            if run.status == "running":
                await hand_over(dispatch, run)
            return run

        return await run_in_transaction(self.engine, work)

    async def start_manual(self, key: str, dispatch: Dispatch) -> Run:
        """Start a manual run of job ``key`` now.  Raises ``UnknownJob``, or
        ``JobRunning`` when the job already has a run in progress."""

        async def work(conn: AsyncConnection) -> Run:
            job_id = (await conn.execute(select(jobs.c.id).where(jobs.c.key == key))).scalar()
            if job_id is None:
                raise UnknownJob(f"no maintenance job {key!r}")
            if await is_running(conn, job_id):
                raise JobRunning(f"job {key!r} is running; wait for its run to finish")
            run_id = uuid.uuid4()
            await lock_run(conn, run_id)
            started = (
                insert(runs)
                .values(id=run_id, job_id=job_id, trigger="manual", status="running")
                .returning(runs)
                .cte("started")
            )
            run = run_of((await conn.execute(runs_of(started))).one())
            await hand_over(dispatch, run)
            return run

        try:
            return await run_in_transaction(self.engine, work)
        except IntegrityError as e:
            if constraint_of(e) != ONE_RUNNING:
                raise
            raise JobRunning(f"job {key!r} is running; wait for its run to finish") from e

    # -- a run's life on the worker ---------------------------------------------------

    async def begin(self, run_id: uuid.UUID) -> Run | None:
        """Mark a worker's start (``started_at``, first time only) and return the run;
        None when it is no longer running (finished, abandoned) or does not exist.
        Waits for the claiming transaction first (its advisory lock)."""

        async def work(conn: AsyncConnection) -> Run | None:
            await lock_run(conn, run_id)
            began = (
                update(runs)
                .where(runs.c.id == run_id, runs.c.status == "running")
                .values(
                    started_at=func.coalesce(runs.c.started_at, func.now()),
                    heartbeat_at=func.now(),
                )
                .returning(runs)
                .cte("began")
            )
            row = (await conn.execute(runs_of(began))).first()
            return None if row is None else run_of(row)

        return await run_in_transaction(self.engine, work)

    async def heartbeat(self, run_id: uuid.UUID) -> bool:
        """Refresh ``heartbeat_at``; False when the run is no longer running."""

        async def work(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.status == "running")
                .values(heartbeat_at=func.now())
            )
            return bool(result.rowcount)

        return await run_in_transaction(self.engine, work)

    async def finish(
        self,
        run_id: uuid.UUID,
        status: RunStatus,
        *,
        message: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> Run | None:
        """Record a running run's outcome; None when it was no longer running (e.g.
        marked abandoned meanwhile), so an outcome is recorded once."""
        if status == "running":
            raise ValueError("a run finishes as success, failed or skipped")

        async def work(conn: AsyncConnection) -> Run | None:
            values: dict[str, Any] = {"status": status, "finished_at": func.now()}
            values["heartbeat_at"] = func.now()
            values["result"] = result
            if message is not None:  # else the claim's note (e.g. a catch-up) stays
                values["message"] = message
            finished = (
                update(runs)
                .where(runs.c.id == run_id, runs.c.status == "running")
                .values(**values)
                .returning(runs)
                .cte("finished")
            )
            row = (await conn.execute(runs_of(finished))).first()
            return None if row is None else run_of(row)

        return await run_in_transaction(self.engine, work)

    async def reap(self, stale_s: float) -> list[Run]:
        """Mark ``failed`` (message ``abandoned``) every running run whose heartbeat is
        older than ``stale_s`` by the database's clock (the one that wrote it);
        returns them.  Concurrent reapers each get distinct runs."""
        error = {"error": {"code": "abandoned", "message": "abandoned"}}
        stale = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, literal(float(stale_s)))

        async def work(conn: AsyncConnection) -> list[Run]:
            reaped = (
                update(runs)
                .where(runs.c.status == "running", runs.c.heartbeat_at < stale)
                .values(
                    status="failed",
                    message="abandoned",
                    finished_at=func.now(),
                    # A claimed run's result may be JSON null (not SQL NULL), and
                    # null || object is an array: start from an object either way.
                    result=case(
                        (func.jsonb_typeof(runs.c.result) == "object", runs.c.result),
                        else_=literal({}, JSONB),
                    ).op("||", return_type=JSONB)(literal(error, JSONB)),
                )
                .returning(runs)
                .cte("reaped")
            )
            return [run_of(row) for row in await conn.execute(runs_of(reaped))]

        return await run_in_transaction(self.engine, work)

    # -- reading runs ------------------------------------------------------------------

    async def run(self, run_id: uuid.UUID) -> Run | None:
        async def work(conn: AsyncConnection) -> Run | None:
            row = (await conn.execute(runs_of(runs).where(runs.c.id == run_id))).first()
            return None if row is None else run_of(row)

        return await run_in_transaction(self.engine, work)

    async def runs(self, *, limit: int = 50, job: str | None = None) -> list[Run]:
        """The newest ``limit`` runs (of job key ``job``), newest first."""
        query = runs_of(runs).order_by(runs.c.created_at.desc(), runs.c.id).limit(limit)
        if job is not None:
            query = query.where(jobs.c.key == job)

        async def work(conn: AsyncConnection) -> list[Run]:
            return [run_of(row) for row in await conn.execute(query)]

        return await run_in_transaction(self.engine, work)

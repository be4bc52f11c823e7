"""Rows of the maintenance tables as values, the store's errors, and the small SQL
pieces its queries share (the transactions themselves are in ``store``)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.journal.maintenance.models import Job, Run
from herald.journal.tables import maintenance_jobs as jobs
from herald.journal.tables import maintenance_runs as runs

__all__ = [
    "DispatchFailed",
    "JobRunning",
    "UnknownJob",
    "advisory_key",
    "constraint_of",
    "hand_over",
    "is_running",
    "job_of",
    "lock_run",
    "run_of",
    "runs_of",
]


class UnknownJob(LookupError):
    code = "job_not_found"


class DispatchFailed(Exception):
    """Handing a claimed run to the task queue failed; the claim was rolled back."""

    code = "dispatch_failed"


class JobRunning(Exception):
    """The job has a run in progress; it is not started again."""

    code = "job_running"


def advisory_key(run_id: uuid.UUID) -> int:
    """The run's advisory lock: 64 bits of its (random) id."""
    return int.from_bytes(run_id.bytes[:8], "big", signed=True)


def job_of(row: Any) -> Job:
    return Job(
        id=row.id,
        key=row.key,
        job_type=row.job_type,
        schedule_cron=row.schedule_cron,
        timezone=row.timezone,
        enabled=row.enabled,
        visible_in_ui=row.visible_in_ui,
        params=dict(row.params or {}),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def run_of(row: Any) -> Run:
    return Run(
        id=row.id,
        job_id=row.job_id,
        job_key=row.key,
        job_type=row.job_type,
        trigger=row.trigger,
        scheduled_for=row.scheduled_for,
        status=row.status,
        message=row.message,
        result=row.result,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        heartbeat_at=row.heartbeat_at,
    )


def runs_of(source: Any) -> Select[Any]:
    """Run rows of ``source`` (the table or a CTE of it) with their job's key and type."""
    return select(source, jobs.c.key, jobs.c.job_type).join(jobs, jobs.c.id == source.c.job_id)


def constraint_of(e: IntegrityError) -> str | None:
    diag = getattr(e.orig, "diag", None)
    return getattr(diag, "constraint_name", None)


async def is_running(conn: AsyncConnection, job_id: int) -> bool:
    found = await conn.execute(
        select(runs.c.id).where(runs.c.job_id == job_id, runs.c.status == "running").limit(1)
    )
    return found.first() is not None


async def lock_run(conn: AsyncConnection, run_id: uuid.UUID) -> None:
    await conn.execute(select(func.pg_advisory_xact_lock(advisory_key(run_id))))


async def hand_over(dispatch: Callable[[Run], Awaitable[None]], run: Run) -> None:
    try:
        await dispatch(run)
    except Exception as e:
        # Not a database fault: the transaction must not be retried as one.
        raise DispatchFailed(f"run {run.id} could not be queued: {e}") from e

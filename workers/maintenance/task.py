"""The ``maintenance.job`` task: a worker runs one claimed maintenance run.

The run's row is the record; the task only carries its id.  On the worker:
``begin`` (waits for the claim to commit, sets ``started_at``) → publish
``maintenance.run.started`` → the job type runs while a heartbeat refreshes
``heartbeat_at`` → ``finish`` records the outcome (only if the run is still
``running``) → publish ``.completed`` or ``.failed``.  A worker killed on the way
leaves the task pending; another worker takes it over (``XAUTOCLAIM``) and runs the
job again (every job type is idempotent), its events' idempotency keys keeping them
single.  A task whose run has already finished only re-publishes that outcome; one
whose claim was rolled back finds no run and does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, Final

import orjson

from herald.journal.maintenance.cutoff import utc_now
from herald.journal.maintenance.events import RUN_TASK_KIND, publish_run_event
from herald.journal.maintenance.models import Run, RunStatus
from herald.journal.maintenance.store import MaintenanceStore
from herald.journal.runtime.metrics import MAINTENANCE_RUN_SECONDS, MAINTENANCE_RUNS
from herald.workers.maintenance.jobs import JobContext, JobError, JobTypes, default_job_types
from herald.workers.task import TaskContext, TaskError, TaskRegistry

__all__ = ["DEFAULT_QUEUE", "MAX_RESULT_BYTES", "execute", "register"]

log = logging.getLogger("herald.maintenance")

DEFAULT_QUEUE: Final = "maintenance"  # HERALD_MAINTENANCE_QUEUE's default
MAX_RESULT_BYTES: Final = 16 * 1024  # a run's result travels in its completed event
INTERNAL_MESSAGE: Final = "the run failed unexpectedly; the error was logged"


def register(registry: TaskRegistry, job_types: JobTypes | None = None) -> None:
    types = job_types or default_job_types()

    async def run_maintenance(ctx: TaskContext) -> dict[str, Any]:
        return await execute(ctx, types)

    registry.task(RUN_TASK_KIND, queue=DEFAULT_QUEUE)(run_maintenance)


async def execute(ctx: TaskContext, types: JobTypes) -> dict[str, Any]:
    """Run the maintenance run named by the task's payload; returns its final status."""
    if ctx.engine is None:
        raise TaskError("no_database", "maintenance runs need PostgreSQL", retry=False)
    try:
        run_id = uuid.UUID(str(ctx.payload["run_id"]))
    except (KeyError, ValueError) as e:
        raise TaskError("bad_payload", "the task has no valid run_id", retry=False) from e
    store = MaintenanceStore(ctx.engine)
    run = await store.begin(run_id)
    if run is None:
        return await _already_done(ctx, store, run_id)
    await publish_run_event(ctx.journal, run, "started")
    began = time.monotonic()
    status, message, result = await _run_job(ctx, store, types, run)
    finished = await store.finish(run_id, status, message=message, result=result)
    if finished is None:
        log.warning("run %s finished as %s, but it was no longer running", run_id, status)
        return {"run_id": str(run_id), "status": "abandoned"}
    MAINTENANCE_RUNS.labels(_label(types, run), status).inc()
    MAINTENANCE_RUN_SECONDS.labels(_label(types, run), status).observe(time.monotonic() - began)
    await publish_run_event(ctx.journal, finished, "completed" if status == "success" else "failed")
    return {"run_id": str(run_id), "status": status}


async def _run_job(
    ctx: TaskContext, store: MaintenanceStore, types: JobTypes, run: Run
) -> tuple[RunStatus, str | None, dict[str, Any]]:
    job_type = types.get(run.job_type)
    if job_type is None:
        return _failure("unknown_job_type", f"no worker knows the job type {run.job_type!r}")
    job = await store.job(run.job_key)
    assert ctx.engine is not None
    job_ctx = JobContext(
        run=run,
        params=dict(job.params) if job is not None else {},
        settings=ctx.settings,
        engine=ctx.engine,
        redis=ctx.redis,
        journal=ctx.journal,
        now=utc_now(),
        job_types=types,
    )
    async with _heartbeat(store, run.id, ctx.settings.maintenance_heartbeat_s):
        try:
            result = await job_type.fn(job_ctx)
        except JobError as e:
            log.info("run %s (%s): %s: %s", run.id, run.job_key, e.code, e.message)
            return _failure(e.code, e.message, e.result)
        except Exception:
            log.exception("run %s (%s) raised", run.id, run.job_key)
            return _failure("internal_error", INTERNAL_MESSAGE)
    if not isinstance(result, dict):
        log.error("job type %s returned %s, not a dict", run.job_type, type(result).__name__)
        return _failure("internal_error", INTERNAL_MESSAGE)
    try:
        size = len(orjson.dumps(result))
    except TypeError:
        log.error("job type %s returned a result that is not JSON", run.job_type)
        return _failure("invalid_result", "the job's result is not JSON")
    if size > MAX_RESULT_BYTES:
        return _failure("result_too_large", f"the job's result is {size} bytes")
    return "success", None, result


def _failure(
    code: str, message: str, partial: dict[str, Any] | None = None
) -> tuple[RunStatus, str, dict[str, Any]]:
    return "failed", message, {**(partial or {}), "error": {"code": code, "message": message}}


def _label(types: JobTypes, run: Run) -> str:
    # Job types come from the database; label only the known ones by name.
    return run.job_type if types.get(run.job_type) is not None else "unknown"


async def _already_done(
    ctx: TaskContext, store: MaintenanceStore, run_id: uuid.UUID
) -> dict[str, Any]:
    """The run is not running: a task taken over after its outcome was recorded
    publishes that outcome (same idempotency key: stored once); a rolled-back claim
    has no run at all."""
    run = await store.run(run_id)
    if run is None:
        return {"run_id": str(run_id), "status": "not_found"}
    window = timedelta(seconds=ctx.settings.idempotency_window_s)
    # Beyond the idempotency window a re-publish would no longer be recognised.
    if run.finished_at is not None and utc_now() - run.finished_at < window:
        if run.status == "success":
            await publish_run_event(ctx.journal, run, "completed")
        elif run.status == "failed":
            await publish_run_event(ctx.journal, run, "failed")
    return {"run_id": str(run_id), "status": run.status}


@contextlib.asynccontextmanager
async def _heartbeat(
    store: MaintenanceStore, run_id: uuid.UUID, every_s: float
) -> AsyncIterator[None]:
    async def beat() -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                if not await store.heartbeat(run_id):
                    log.warning("run %s is no longer running (marked abandoned?)", run_id)
                    return
            except Exception as e:  # the next beat tries again; staleness is the reaper's
                log.warning("run %s: heartbeat failed: %s", run_id, e)

    task = asyncio.create_task(beat(), name=f"maintenance heartbeat {run_id}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

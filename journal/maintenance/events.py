"""What the outside sees of maintenance: ``maintenance.run.*`` envelopes on topic
``maintenance``, the task that carries a run to a worker, and the Redis hash the
schedulers heartbeat in.

Every run event has an idempotency key per (run, event), so a publish retried by a
worker taking over a run, or by a reaper racing another, is stored once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from herald.journal.base import Journal, try_publish
from herald.journal.maintenance.models import Run
from herald.journal.positions import Target

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from herald.journal.runtime.settings import Settings
    from herald.journal.tasks.queue import TaskQueue

__all__ = [
    "RUN_TASK_KIND",
    "SCHEDULERS_KEY",
    "TASK_OWNER",
    "TOPIC",
    "dispatcher",
    "publish_job_event",
    "publish_run_event",
    "record_scheduler_pass",
    "run_event",
    "scheduler_passes",
    "try_publish_run_event",
]

log = logging.getLogger("herald.maintenance")

TOPIC: Final = "maintenance"
SUFFIXES: Final = ("started", "completed", "failed", "skipped")
# The task kind a worker runs a claimed run as.  Its own task lifecycle events go to
# the system user below; the run's events are the topic's.
RUN_TASK_KIND: Final = "maintenance.job"
TASK_OWNER: Final = "herald.maintenance"
# Hash: scheduler id -> unix ms of its last finished pass (readiness reads it).
SCHEDULERS_KEY: Final = "herald:schedulers"


def run_event(run: Run, suffix: str) -> tuple[str, dict[str, Any], str]:
    """The envelope type, data and idempotency key of ``maintenance.run.<suffix>``.
    ``failed`` adds the error ``code`` kept in the run's result."""
    if suffix not in SUFFIXES:
        raise ValueError(f"no maintenance.run.{suffix} event")
    data = run.event_data()
    if suffix == "failed":
        error = run.result.get("error") if isinstance(run.result, dict) else None
        data["code"] = error.get("code", "failed") if isinstance(error, dict) else "failed"
    return f"maintenance.run.{suffix}", data, f"maintenance:{run.id}:{suffix}"


async def publish_run_event(journal: Journal, run: Run, suffix: str) -> None:
    """Publish (raising the journal's errors: the caller retries with the same key)."""
    type_, data, key = run_event(run, suffix)
    await journal.publish(Target.topic(TOPIC), type_, data, idempotency_key=key)


async def try_publish_run_event(journal: Journal, run: Run, suffix: str) -> bool:
    """Publish without raising; a failure is logged (the run's row stays the record)."""
    type_, data, key = run_event(run, suffix)
    outcome = await try_publish(journal, Target.topic(TOPIC), type_, data, idempotency_key=key)
    if not outcome.ok:
        log.warning("run %s: %s not published: %s", run.id, type_, outcome.detail)
    return outcome.ok


async def publish_job_event(journal: Journal, view: dict[str, Any]) -> bool:
    """``maintenance.job.updated`` with the job as the API shows it (after a change),
    so a page can refresh its schedule and next run time; never raises."""
    outcome = await try_publish(journal, Target.topic(TOPIC), "maintenance.job.updated", view)
    if not outcome.ok:
        log.warning(
            "job %s: maintenance.job.updated not published: %s", view.get("key"), outcome.detail
        )
    return outcome.ok


def dispatcher(tasks: TaskQueue, settings: Settings) -> Callable[[Run], Awaitable[None]]:
    """The ``dispatch`` callback of a claim: queue the run for a worker."""

    async def dispatch(run: Run) -> None:
        await tasks.enqueue(
            RUN_TASK_KIND,
            TASK_OWNER,
            {"run_id": str(run.id)},
            context={"run_id": str(run.id), "key": run.job_key},
            queue=settings.maintenance_queue,
            publish_queued=False,
        )

    return dispatch


async def record_scheduler_pass(redis: aioredis.Redis, scheduler_id: str, keep_s: float) -> None:
    """Note that ``scheduler_id`` finished a pass now; forget schedulers silent for
    longer than ``keep_s`` on the way."""
    now_ms = int(time.time() * 1000)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(SCHEDULERS_KEY, scheduler_id, now_ms)
        pipe.hgetall(SCHEDULERS_KEY)
        _, seen = await pipe.execute()
    gone = [k for k, v in seen.items() if now_ms - int(v) > keep_s * 1000]
    if gone:
        await redis.hdel(SCHEDULERS_KEY, *gone)


async def scheduler_passes(redis: aioredis.Redis) -> dict[str, int]:
    """Scheduler id -> unix ms of its last pass."""
    raw = await redis.hgetall(SCHEDULERS_KEY)
    out = {}
    for k, v in raw.items():
        name = k.decode() if isinstance(k, bytes) else str(k)
        text = v.decode() if isinstance(v, bytes) else str(v)
        if text.isdigit():
            out[name] = int(text)
    return out

"""One delivery of one task: run it and record its outcome durably.

The outcome of a delivery is published first, then stored in the task's status
record (with the delivery's entry id), then the delivery is acknowledged, moved
to the retry schedule or to the dead-letter stream.  A worker that dies between
those steps leaves the delivery pending; whoever reclaims it finds the stored
outcome for that entry and finishes the same steps again instead of running the
task a second time.  Lifecycle publishes carry idempotency keys, so a step done
twice publishes once: exactly one ``completed`` (or ``failed``) per task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError

from herald.journal.base import Journal, try_publish
from herald.journal.envelope import EnvelopeError
from herald.journal.positions import Target
from herald.journal.runtime.metrics import TASK_SECONDS, TASKS
from herald.journal.tasks.queue import (
    InvalidTask,
    QueuedTask,
    StatusUpdate,
    TaskQueue,
    iso_time,
    now_ms,
)
from herald.workers._progress import ProgressThrottle
from herald.workers.task import Deferred, TaskContext, TaskError, TaskRegistry, TaskSpec

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from sqlalchemy.ext.asyncio import AsyncEngine

    from herald.journal.runtime.settings import Settings

__all__ = ["Delivery", "Runner"]

log = logging.getLogger("herald.worker")

RUNNING_AFTER_S = 0.05  # a task running this long gets status "running"
MAX_MESSAGE = 300  # characters of a TaskError message that reach the event
INTERNAL_MESSAGE = "the task failed unexpectedly; the error was logged"
LOST_MESSAGE = "the worker running the task stopped before it finished"
_DONE = ("completed", "failed", "deferred")


@dataclass(frozen=True, slots=True)
class Delivery:
    """A stream entry handed to this worker; ``delivered`` counts this hand-over."""

    queue: str
    entry_id: str
    fields: dict[Any, Any]
    delivered: int = 1


@dataclass(frozen=True, slots=True)
class _Failure:
    code: str
    message: str
    retry: bool


class _Lifecycle:
    """Publishes ``<prefix>.<suffix>`` to the owner with ``task_id`` and the context."""

    __slots__ = ("journal", "prefix", "target", "task")

    def __init__(self, journal: Journal, task: QueuedTask, prefix: str) -> None:
        self.journal, self.task, self.prefix = journal, task, prefix
        self.target = Target.user(task.owner)

    def data(self, extra: dict[str, Any]) -> dict[str, Any]:
        data = {"task_id": self.task.task_id, **self.task.context, **extra}
        data["task_id"] = self.task.task_id
        return data

    async def publish(self, suffix: str, extra: dict[str, Any], key: str | None = None) -> None:
        """Raises the journal's errors (the caller decides what they mean)."""
        await self.journal.publish(
            self.target, f"{self.prefix}.{suffix}", self.data(extra), idempotency_key=key
        )


class Runner:
    """Runs deliveries for one worker (``consumer``)."""

    def __init__(
        self,
        registry: TaskRegistry,
        *,
        redis: aioredis.Redis,
        journal: Journal,
        settings: Settings,
        engine: AsyncEngine | None,
        queue: TaskQueue,
        on_retry: Any = None,
    ) -> None:
        self.registry = registry
        self.redis = redis
        self.journal = journal
        self.settings = settings
        self.engine = engine
        self.queue = queue
        self.on_retry = on_retry  # called with the due unix ms of a scheduled retry

    async def run(self, d: Delivery) -> None:
        """Run one delivery to a durable outcome.  Redis failing on the way raises;
        the delivery then stays pending and is reclaimed after the visibility timeout."""
        try:
            task = QueuedTask.from_fields(d.queue, d.fields)
        except InvalidTask as e:
            # Nothing Herald wrote; keeping it would only make it reclaimed forever.
            log.error("dropping entry %s of queue %s: %s", d.entry_id, d.queue, e)
            await self.queue.ack(d.queue, d.entry_id)
            return
        spec = self.registry.get(task.kind)
        prefix = (spec.events if spec is not None else "") or task.events or task.kind
        life = _Lifecycle(self.journal, task, prefix)
        attempt = task.attempt + d.delivered - 1
        if d.delivered > 1 and await self._finish_recorded(d, task, life):
            return
        if spec is None:
            message = f"no worker knows the task kind {task.kind!r}"
            await self._fail(d, task, life, attempt, "unknown_task", message, spec)
            return
        limit = task.max_attempts or spec.max_attempts or self.settings.task_max_attempts
        if attempt > limit:
            await self._fail(d, task, life, attempt - 1, "worker_lost", LOST_MESSAGE, spec)
            return
        fresh = task.attempt == 1 and d.delivered == 1
        running = StatusUpdate(
            task.task_id,
            "running",
            {"attempt": attempt, "entry": d.entry_id, "started_at": _iso_now(), "kind": task.kind},
            clean=not fresh,
        )
        began = time.monotonic()
        async with self._running_status(running):
            outcome, failure = await self._call(spec, task, life, attempt)
        elapsed = time.monotonic() - began
        if failure is None and isinstance(outcome, Deferred):
            values = {"attempt": attempt, "entry": d.entry_id}
            done = StatusUpdate(task.task_id, "deferred", values, clean=not fresh)
            await self.queue.ack(d.queue, d.entry_id, status=done)
            _count(spec, "deferred", elapsed)
            return
        if failure is None:
            assert isinstance(outcome, dict)
            failure = await self._complete(d, task, life, attempt, outcome, clean=not fresh)
            if failure is None:
                _count(spec, "completed", elapsed)
                return
        if failure.retry and attempt < limit:
            await self._schedule_retry(d, task, attempt, failure)
            _count(spec, "retried", elapsed)
            return
        await self._fail(d, task, life, attempt, failure.code, failure.message, spec, elapsed)

    async def _call(
        self, spec: TaskSpec, task: QueuedTask, life: _Lifecycle, attempt: int
    ) -> tuple[dict[str, Any] | Deferred | None, _Failure | None]:
        throttle = ProgressThrottle()

        async def progress(current: int, total: int, data: dict[str, Any]) -> None:
            if throttle.allow(current, total, time.monotonic()):
                extra = {"current": current, "total": total, **data}
                # Best effort: a lost progress event must not fail the task.
                await try_publish(
                    self.journal, life.target, f"{life.prefix}.progress", life.data(extra)
                )

        ctx = TaskContext(
            task_id=task.task_id,
            kind=task.kind,
            owner=task.owner,
            payload=task.payload,
            context=task.context,
            attempt=attempt,
            settings=self.settings,
            journal=self.journal,
            redis=self.redis,
            engine=self.engine,
            queue=self.queue,
            events=life.prefix,
            _progress=progress,
            _publish=life.publish,
        )
        try:
            outcome = await spec.fn(ctx)
        except TaskError as e:
            log.info("task %s (%s) attempt %d: %s: %s", task.task_id, task.kind, attempt, e.code, e)
            return None, _Failure(e.code, e.message[:MAX_MESSAGE], e.retry)
        except Exception:
            log.exception("task %s (%s) attempt %d raised", task.task_id, task.kind, attempt)
            return None, _Failure("internal_error", INTERNAL_MESSAGE, True)
        if not isinstance(outcome, dict | Deferred):
            log.error(
                "task kind %s returned %s, not a dict or DEFERRED",
                task.kind,
                type(outcome).__name__,
            )
            return None, _Failure("internal_error", INTERNAL_MESSAGE, False)
        return outcome, None

    @contextlib.asynccontextmanager
    async def _running_status(self, update: StatusUpdate) -> AsyncIterator[None]:
        """Record "running" once the task has run for RUNNING_AFTER_S: a quick task
        goes from queued to its outcome without that round trip."""
        writes: list[asyncio.Task[None]] = []
        handle = asyncio.get_running_loop().call_later(
            RUNNING_AFTER_S,
            lambda: writes.append(asyncio.create_task(self.queue.write_status(update))),
        )
        try:
            yield
        finally:
            handle.cancel()
            for write in writes:  # before the outcome, which must overwrite it
                try:
                    await write
                except (RedisError, OSError) as e:
                    log.warning("task %s: recording 'running' failed: %s", update.task_id, e)

    async def _complete(
        self,
        d: Delivery,
        task: QueuedTask,
        life: _Lifecycle,
        attempt: int,
        result: dict[str, Any],
        *,
        clean: bool,
    ) -> _Failure | None:
        try:
            await life.publish("completed", result, key=f"task:{task.task_id}:completed")
        except EnvelopeError as e:
            log.error("task %s (%s): result not publishable: %s", task.task_id, task.kind, e)
            code = "result_too_large" if e.code == "envelope_too_large" else "invalid_result"
            return _Failure(code, "the task's result could not be published", False)
        values = {
            "attempt": attempt,
            "entry": d.entry_id,
            "result": result,
            "finished_at": _iso_now(),
        }
        completed = StatusUpdate(task.task_id, "completed", values, clean=clean)
        await self.queue.ack(d.queue, d.entry_id, status=completed)
        return None

    async def _schedule_retry(
        self, d: Delivery, task: QueuedTask, attempt: int, failure: _Failure
    ) -> None:
        delay_s = self.settings.task_backoff_s * 2 ** (attempt - 1)
        due = now_ms() + int(delay_s * 1000)
        values = {
            "attempt": attempt,
            "error": {"code": failure.code, "message": failure.message},
            "next_attempt_at": iso_time(due),
        }
        moved = await self.queue.schedule_retry(
            d.queue,
            d.entry_id,
            replace(task, attempt=attempt + 1),
            due,
            status=StatusUpdate(task.task_id, "retrying", values),
        )
        if moved and self.on_retry is not None:
            self.on_retry(due)

    async def _fail(
        self,
        d: Delivery,
        task: QueuedTask,
        life: _Lifecycle,
        attempt: int,
        code: str,
        message: str,
        spec: TaskSpec | None,
        elapsed: float = 0.0,
    ) -> None:
        error = {"code": code, "message": message}
        await self._publish_failed(d, task, life, attempt, error)
        values = {"attempt": attempt, "entry": d.entry_id, "error": error}
        values["finished_at"] = _iso_now()
        failed = StatusUpdate(task.task_id, "failed", values)
        await self.queue.bury(d.queue, d.entry_id, task, attempt, code, message, status=failed)
        _count(spec, "failed", elapsed)

    async def _publish_failed(
        self, d: Delivery, task: QueuedTask, life: _Lifecycle, attempt: int, error: dict[str, str]
    ) -> None:
        try:
            # Keyed by delivery: a task re-queued from the dead letters may fail again.
            key = f"task:{task.task_id}:failed:{d.entry_id}"
            await life.publish("failed", {**error, "attempts": attempt}, key=key)
        except EnvelopeError as e:  # a context too large for any event; still bury it
            log.error("task %s: failed event not publishable: %s", task.task_id, e)

    async def _finish_recorded(self, d: Delivery, task: QueuedTask, life: _Lifecycle) -> bool:
        """A reclaimed delivery whose outcome was already stored: finish the steps a
        dead worker left undone (each is idempotent) and report True."""
        record = await self.queue.status_record(task.task_id)
        status = record.get("status")
        if record.get("entry") != d.entry_id or status not in _DONE:
            return False
        attempt = int(record.get("attempt") or task.attempt)
        if status == "completed":
            result = orjson.loads(record.get("result") or "{}")
            await life.publish("completed", result, key=f"task:{task.task_id}:completed")
            await self.queue.ack(d.queue, d.entry_id)
        elif status == "failed":
            error = orjson.loads(record.get("error") or "{}")
            code, message = error.get("code", "internal_error"), error.get("message", "")
            await self._publish_failed(d, task, life, attempt, {"code": code, "message": message})
            await self.queue.bury(d.queue, d.entry_id, task, attempt, code, message)
        else:
            await self.queue.ack(d.queue, d.entry_id)
        log.info("task %s: finished the recorded %s outcome of a lost worker", task.task_id, status)
        return True


def _count(spec: TaskSpec | None, outcome: str, elapsed: float) -> None:
    # Unknown kinds come from producers; label them alike to bound cardinality.
    kind = spec.kind if spec is not None else "unknown"
    TASKS.labels(kind, outcome).inc()
    TASK_SECONDS.labels(kind, outcome).observe(elapsed)


def _iso_now() -> str:
    return iso_time(now_ms())

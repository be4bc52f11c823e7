"""The task queue in Redis: what producers (Python callers, the HTTP API) enqueue, and
the durable moves a worker makes with a delivered task.

One Redis Stream per queue, read by one consumer group, plus a retry schedule and a
dead-letter stream; all three share the queue's hash tag (the keys are listed in
``herald.journal.tasks.keys``), so every move between them is one atomic Lua script
(``lua/*.lua``) — a task is always in exactly one place, and a worker dying at any
moment loses nothing.

Enqueue publishes ``<events>.queued`` to the owner's stream *before* adding the
task, so no later lifecycle event can precede it.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from herald.journal.base import Journal, try_publish
from herald.journal.positions import NAME_RE, Target
from herald.journal.runtime.settings import Settings
from herald.journal.tasks.entries import (
    FINAL,
    GROUP,
    KIND_RE,
    MAX_TASK_BYTES,
    OUTCOME_FIELDS,
    InvalidTask,
    QueuedTask,
    StatusUpdate,
    TaskQueueError,
    TaskQueueUnavailable,
    TaskTooLarge,
    as_text,
    dead_view,
    iso_time,
    now_ms,
    public_status,
)
from herald.journal.tasks.keys import WORKERS_KEY, dead_key, retry_key, status_key, tasks_key

__all__ = [
    "GROUP",
    "KIND_RE",
    "MAX_TASK_BYTES",
    "InvalidTask",
    "QueuedTask",
    "StatusUpdate",
    "TaskQueue",
    "TaskQueueError",
    "TaskQueueUnavailable",
    "TaskTooLarge",
    "dead_view",
    "iso_time",
    "now_ms",
    "public_status",
]


def _script(client: aioredis.Redis, name: str) -> Any:
    return client.register_script(
        resources.files("herald.journal.tasks").joinpath(f"lua/{name}").read_text()
    )


class TaskQueue:
    """Producer API and the worker's durable moves, on the command client."""

    def __init__(self, redis: aioredis.Redis, journal: Journal, settings: Settings) -> None:
        self.redis = redis
        self.journal = journal
        self.settings = settings
        self._ack = _script(redis, "ack.lua")
        self._retry = _script(redis, "retry.lua")
        self._promote = _script(redis, "promote.lua")
        self._bury = _script(redis, "bury.lua")
        self._requeue = _script(redis, "requeue.lua")
        self._touch = _script(redis, "touch.lua")
        self._heartbeat = _script(redis, "workers_heartbeat.lua")

    # -- producer side -------------------------------------------------------------

    async def enqueue(
        self,
        kind: str,
        owner: str,
        payload: dict[str, Any],
        *,
        task_id: str | None = None,
        context: dict[str, Any] | None = None,
        queue: str = "default",
        max_attempts: int | None = None,
        events: str = "",
        publish_queued: bool = True,
    ) -> str:
        """Queue a task for ``owner`` and return its id.

        ``<events or kind>.queued`` with ``{"task_id", **context}`` is published to the
        owner's stream first (unless ``publish_queued`` is false: a continuation that
        reuses ``task_id``), then the task is added.  Raises ``InvalidTask`` /
        ``TaskTooLarge`` before touching Redis and ``TaskQueueUnavailable`` (or the
        journal's ``JournalUnavailable``) when Redis fails.
        """
        task = self._validate(kind, owner, payload, task_id, context, queue, max_attempts, events)
        task = replace(task, publish_queued=publish_queued, enqueued_ms=now_ms())
        prefix = events or kind
        if publish_queued:
            await self.journal.publish(
                Target.user(owner), f"{prefix}.queued", {"task_id": task.task_id, **task.context}
            )
        status = {
            "task_id": task.task_id,
            "kind": kind,
            "owner": owner,
            "queue": queue,
            "status": "queued",
            "attempt": "0",
            "updated_at": iso_time(task.enqueued_ms),
        }
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                self._status_commands(pipe, task.task_id, status, clean=True)
                # A continuation (same task id) keeps the task's first queued_at.
                pipe.hsetnx(status_key(task.task_id), "queued_at", iso_time(task.enqueued_ms))
                pipe.xadd(tasks_key(queue), task.fields())  # type: ignore[arg-type]
                await pipe.execute()
        except (RedisError, OSError) as e:
            if publish_queued:
                data = {"task_id": task.task_id, **task.context, "code": "enqueue_failed"}
                data["message"] = "the task could not be queued; try again"
                await try_publish(self.journal, Target.user(owner), f"{prefix}.failed", data)
            raise TaskQueueUnavailable(f"Redis unavailable: {e}") from e
        return task.task_id

    def _validate(
        self,
        kind: str,
        owner: str,
        payload: dict[str, Any],
        task_id: str | None,
        context: dict[str, Any] | None,
        queue: str,
        max_attempts: int | None,
        events: str,
    ) -> QueuedTask:
        for what, value in (("kind", kind), ("events", events or kind)):
            if not KIND_RE.fullmatch(value) or len(value) > 200:
                raise InvalidTask(f"{what} {value!r} must match {KIND_RE.pattern}")
        for what, value in (("owner", owner), ("queue", queue), ("task_id", task_id or "x")):
            if not NAME_RE.fullmatch(value):
                raise InvalidTask(f"{what} {value!r} must match {NAME_RE.pattern}")
        if max_attempts is not None and max_attempts < 1:
            raise InvalidTask("max_attempts must be at least 1")
        if not isinstance(payload, dict) or not isinstance(context or {}, dict):
            raise InvalidTask("payload and context must be dicts")
        task = QueuedTask(
            task_id=task_id or secrets.token_hex(12),
            kind=kind,
            owner=owner,
            queue=queue,
            payload=payload,
            context=dict(context or {}),
            max_attempts=max_attempts,
            events=events,
        )
        try:
            size = len(orjson.dumps(payload)) + len(orjson.dumps(task.context))
        except TypeError as e:
            raise InvalidTask(f"payload and context must be JSON-serialisable: {e}") from e
        if size > MAX_TASK_BYTES:
            raise TaskTooLarge(
                f"payload and context are {size} bytes; the limit is {MAX_TASK_BYTES} "
                "(pass a reference to large inputs instead)"
            )
        return task

    # -- status ----------------------------------------------------------------------

    def _status_commands(
        self, pipe: Any, task_id: str, values: dict[str, str], *, clean: bool
    ) -> None:
        key = status_key(task_id)
        stale = [f for f in OUTCOME_FIELDS if f not in values] if clean else []
        if stale:
            pipe.hdel(key, *stale)
        pipe.hset(key, mapping=values)
        pipe.expire(key, self.settings.task_result_ttl_s)

    async def set_status(self, task_id: str, status: str, **values: Any) -> None:
        """Record a step of the task; ``result`` / ``error`` are stored as JSON."""
        await self.write_status(StatusUpdate(task_id, status, values))

    async def write_status(self, update: StatusUpdate) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            self._status_commands(pipe, update.task_id, update.record(), clean=update.clean)
            await pipe.execute()

    async def status_record(self, task_id: str) -> dict[str, str]:
        """The raw status hash (empty when unknown or expired); includes ``owner``."""
        if not NAME_RE.fullmatch(task_id):
            return {}
        raw = await self.redis.hgetall(status_key(task_id))
        return {as_text(k): as_text(v) for k, v in raw.items()}

    async def status(self, task_id: str) -> dict[str, Any] | None:
        """The task as a client sees it: ``{"task_id", "kind", "user", "status", ...}``,
        ``status`` being queued, running, retrying, deferred, completed or failed."""
        record = await self.status_record(task_id)
        return public_status(record) if record else None

    async def result(self, task_id: str) -> dict[str, Any] | None:
        """The final outcome — ``{"status": "completed", "result": {...}}`` or
        ``{"status": "failed", "error": {"code", "message"}}`` plus the status fields —
        or None while the task has not finished (or its record expired)."""
        found = await self.status(task_id)
        return found if found is not None and found["status"] in FINAL else None

    # -- dead letters ------------------------------------------------------------------

    async def dead(self, queue: str = "default", limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` dead-letter entries of ``queue``, newest first."""
        rows: Any = await self.redis.xrevrange(dead_key(queue), "+", "-", count=limit)
        return [dead_view(queue, as_text(entry_id), fields) for entry_id, fields in rows]

    async def retry_dead(self, task_id: str, *, queue: str | None = None) -> bool:
        """Put a dead task back on its queue with a fresh attempt count (and publish
        ``.queued`` again if its first enqueue did).  False if it is not in the
        dead-letter stream (the queue comes from its status record, else ``default``)."""
        if queue is None:
            queue = (await self.status_record(task_id)).get("queue") or "default"
        found = await self._find_dead(queue, task_id)
        if found is None:
            return False
        entry_id, raw = found
        try:
            task = QueuedTask.from_fields(queue, raw)
        except InvalidTask:
            return False
        task = replace(task, attempt=1, enqueued_ms=now_ms())
        prefix = task.events or task.kind
        if task.publish_queued:
            await self.journal.publish(
                Target.user(task.owner), f"{prefix}.queued", {"task_id": task_id, **task.context}
            )
        await self.set_status(task_id, "queued", attempt=0, queue=queue)
        new_id = await self._requeue(
            keys=[dead_key(queue), tasks_key(queue)], args=[entry_id, *task.flat()]
        )
        return new_id is not None

    async def _find_dead(self, queue: str, task_id: str) -> tuple[str, dict[Any, Any]] | None:
        upper = "+"
        while True:
            rows: Any = await self.redis.xrevrange(dead_key(queue), upper, "-", count=500)
            for entry_id, fields in rows:
                if as_text(fields.get(b"id")) == task_id:
                    return as_text(entry_id), fields
            if len(rows) < 500:
                return None
            upper = f"({as_text(rows[-1][0])}"

    # -- the worker's moves ------------------------------------------------------------

    # Each move below may carry the status update that goes with it: sent in the
    # same round trip, and applied before the move (the outcome is on record
    # before the delivery disappears).

    async def ack(self, queue: str, entry_id: str, *, status: StatusUpdate | None = None) -> bool:
        """Acknowledge and delete a finished delivery (False: no longer pending)."""
        return await self._move(self._ack, [tasks_key(queue)], [GROUP, entry_id], status)

    async def schedule_retry(
        self,
        queue: str,
        entry_id: str,
        task: QueuedTask,
        due_ms: int,
        *,
        status: StatusUpdate | None = None,
    ) -> bool:
        """Atomically move a failed delivery to the retry schedule as ``task``."""
        member = orjson.dumps(task.flat())
        keys = [tasks_key(queue), retry_key(queue)]
        return await self._move(self._retry, keys, [GROUP, entry_id, due_ms, member], status)

    async def promote_due(self, queue: str, *, limit: int = 100) -> tuple[int, int | None]:
        """Move due retries back to the stream: (how many, next due unix ms or None)."""
        reply = await self._promote(
            keys=[tasks_key(queue), retry_key(queue)], args=[now_ms(), limit]
        )
        nxt = int(float(reply[1])) if len(reply) > 1 and reply[1] is not None else None
        return int(reply[0]), nxt

    async def bury(
        self,
        queue: str,
        entry_id: str,
        task: QueuedTask,
        attempt: int,
        code: str,
        message: str,
        *,
        status: StatusUpdate | None = None,
    ) -> bool:
        """Atomically move a delivery that failed for good to the dead-letter stream."""
        dead = {
            **task.fields(),
            "attempt": str(attempt),
            "code": code,
            "message": message,
            "failed_at": str(now_ms()),
        }
        flat: list[str] = []
        for k, v in dead.items():
            flat += (k, as_text(v))
        keys = [tasks_key(queue), dead_key(queue)]
        args = [GROUP, entry_id, self.settings.stream_maxlen, *flat]
        return await self._move(self._bury, keys, args, status)

    async def _move(
        self, script: Any, keys: list[str], args: list[Any], status: StatusUpdate | None
    ) -> bool:
        if status is None:
            return bool(await script(keys=keys, args=args))
        # Plain EVALSHA in the pipeline (see RedisJournal._pipeline_calls): should the
        # server have lost the script, the status part is simply applied twice.
        for attempt in (1, 2):
            async with self.redis.pipeline(transaction=False) as pipe:
                self._status_commands(pipe, status.task_id, status.record(), clean=status.clean)
                # execute_command: RedisCluster's pipeline refuses .evalsha (not EVALSHA).
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                try:
                    return bool((await pipe.execute())[-1])
                except NoScriptError:
                    if attempt == 2:
                        raise
                    await self.redis.script_load(script.script)
        raise AssertionError("unreachable")

    async def touch(self, queue: str, consumer: str, entry_ids: list[str]) -> int:
        """Reset the idle time of this consumer's running deliveries."""
        if not entry_ids:
            return 0
        return int(await self._touch(keys=[tasks_key(queue)], args=[GROUP, consumer, *entry_ids]))

    # -- worker heartbeats ---------------------------------------------------------------

    def _keep_ms(self) -> int:
        return int(self.settings.worker_stale_s * 10 * 1000)

    async def heartbeat(self, worker_id: str) -> None:
        """Record ``worker_id`` as alive now in ``herald:workers`` (unix ms)."""
        await self._heartbeat(
            keys=[WORKERS_KEY], args=[now_ms(), self._keep_ms(), 2 * self._keep_ms(), worker_id]
        )

    async def workers(self) -> dict[str, int]:
        """Every worker heard from recently: id -> last heartbeat (unix ms).  Fields
        older than 10 x HERALD_WORKER_STALE_S are deleted on the way."""
        reply = await self._heartbeat(
            keys=[WORKERS_KEY], args=[now_ms(), self._keep_ms(), 2 * self._keep_ms(), ""]
        )
        return {as_text(reply[i]): int(reply[i + 1]) for i in range(0, len(reply), 2)}

    async def live_workers(self) -> dict[str, int]:
        """Workers whose last heartbeat is newer than HERALD_WORKER_STALE_S."""
        cutoff = now_ms() - int(self.settings.worker_stale_s * 1000)
        return {k: v for k, v in (await self.workers()).items() if v >= cutoff}

    async def forget_worker(self, worker_id: str) -> None:
        await self.redis.hdel(WORKERS_KEY, worker_id)

"""The worker: reads tasks from Redis Stream consumer groups and runs them.

One consumer group (``workers``) per queue; each worker is one consumer.  A worker
only reads as many tasks as it has free slots (``concurrency``), so everything it
holds is running, and it keeps its running tasks' entries fresh (``XCLAIM …
JUSTID``) so they are never taken from it.  An entry idle for longer than
``HERALD_TASK_VISIBILITY_TIMEOUT_S`` belongs to a worker that died: any worker
takes it over with ``XAUTOCLAIM`` and runs (or finishes) it.  Failed attempts
wait in a per-queue retry schedule (a sorted set, moved back atomically when
due), so a task survives a worker dying during its backoff too.

``run()`` works until ``request_stop()`` (SIGTERM): it stops taking tasks, lets
the running ones finish, and returns.  ``run_until_idle()`` is the drain mode for
tests and scripts.  Blocking reads use one dedicated connection per queue with no
socket timeout; everything else uses the shared command client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from herald.journal.tasks.keys import tasks_key
from herald.journal.tasks.queue import GROUP, TaskQueue, now_ms
from herald.workers._execute import Delivery, Runner
from herald.workers._support import (
    Slots,
    blocking_client,
    cancel_all,
    default_consumer_name,
    id_order,
    stream_rows,
    text,
)
from herald.workers.task import TaskRegistry

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from herald.journal.base import Journal
    from herald.journal.runtime.settings import Settings

__all__ = ["Worker", "blocking_client", "default_consumer_name"]  # the last two re-exported

log = logging.getLogger("herald.worker")

BLOCK_MS = 5000  # one blocking read; request_stop() interrupts it
PROMOTE_MAX_WAIT_S = 1.0  # retries scheduled by other workers are noticed this fast
_ERRORS = (RedisError, OSError)


class Worker:
    """Runs the kinds of ``registry`` from ``queues`` (default: every queue a kind
    uses, plus ``default``)."""

    def __init__(
        self,
        registry: TaskRegistry,
        *,
        redis: aioredis.Redis,
        journal: Journal,
        settings: Settings,
        engine: AsyncEngine | None = None,
        queue: TaskQueue,
        concurrency: int | None = None,
        consumer_name: str | None = None,
        queues: Sequence[str] | None = None,
        reader_factory: Callable[[], aioredis.Redis] | None = None,
    ) -> None:
        self.registry = registry
        self.redis = redis
        self.settings = settings
        self.queue = queue
        self.concurrency = concurrency or settings.worker_concurrency
        self.consumer = consumer_name or default_consumer_name()
        self.queues = list(queues) if queues else sorted({*registry.queues(), "default"})
        self._reader_factory = reader_factory or (lambda: blocking_client(settings))
        self._slots = Slots(self.concurrency)
        if settings.task_visibility_timeout_s >= settings.idempotency_window_s:
            log.warning(
                "HERALD_TASK_VISIBILITY_TIMEOUT_S (%s) is not below HERALD_IDEMPOTENCY_WINDOW_S "
                "(%s): a task taken over from a dead worker may publish `completed` twice",
                settings.task_visibility_timeout_s,
                settings.idempotency_window_s,
            )
        # Each queue's reader may hold at most its share of the slots while it
        # blocks, so a busy queue cannot starve the others.
        self._share = max(1, -(-self.concurrency // len(self.queues)))
        self._running: dict[asyncio.Task[None], Delivery] = {}
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()  # set once groups exist and the first heartbeat is in
        self.draining = asyncio.Event()  # set once a stopping worker takes no more tasks
        self._retry_due = asyncio.Event()
        self._runner = Runner(
            registry,
            redis=redis,
            journal=journal,
            settings=settings,
            engine=engine,
            queue=queue,
            on_retry=lambda _due: self._retry_due.set(),
        )

    # -- public -------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop taking tasks; ``run()`` returns once the running ones finished.
        Safe to call from a signal handler installed with ``loop.add_signal_handler``."""
        self._stopping.set()

    @property
    def running(self) -> int:
        return len(self._running)

    async def run(self) -> None:
        """Work until ``request_stop()``, then finish the running tasks and return."""
        await self._prepare()
        readers = [asyncio.create_task(self._read_loop(q), name=f"read {q}") for q in self.queues]
        chores = self._start_chores(heartbeat=True, promote=True)
        stop = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait([stop, *readers], return_when=asyncio.FIRST_COMPLETED)
            self._stopping.set()
            for reader in readers:
                reader.cancel()
            results = await asyncio.gather(*readers, return_exceptions=True)
            # A read cancelled in flight may have been handed entries: run them too.
            try:
                await self._take_own_pending()
            except _ERRORS as e:  # they are reclaimed later; finish what runs
                log.warning("could not check this worker's own pending tasks: %s", e)
            self.draining.set()
            await self._wait_running()
            for r in results:
                if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                    raise r
        finally:
            stop.cancel()
            await cancel_all(chores)
            await self._cancel_running()
            await self._leave()

    async def run_until_idle(self) -> None:
        """Drain mode: run tasks until none is ready, running, reclaimable or waiting
        in the retry schedule (it waits for scheduled retries to come due)."""
        await self._prepare(register=False)
        chores = self._start_chores(heartbeat=False, promote=False)
        try:
            while True:
                started, next_due = 0, None
                for q in self.queues:
                    _, due = await self.queue.promote_due(q)
                    if due is not None:
                        next_due = due if next_due is None else min(next_due, due)
                    started += await self._reclaim(q)
                    started += await self._read_now(q)
                if self._running:
                    await asyncio.wait(list(self._running), return_when=asyncio.FIRST_COMPLETED)
                    continue
                if started:
                    continue
                if next_due is None:
                    return
                await asyncio.sleep(max(0.0, (next_due - now_ms()) / 1000))
        finally:
            await cancel_all(chores)
            await self._cancel_running()
            await self._leave()

    # -- reading ------------------------------------------------------------------

    async def _prepare(self, *, register: bool = True) -> None:
        for q in self.queues:
            await self._ensure_group(q)
        if register:  # drain mode is no worker readiness should count on
            await self.queue.heartbeat(self.consumer)
            await self._forget_dead_consumers()
        self.ready.set()
        await self._take_own_pending()

    async def _ensure_group(self, q: str) -> None:
        try:
            # From id 0: tasks enqueued before any worker existed are read too.
            await self.redis.xgroup_create(tasks_key(q), GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def _read_loop(self, q: str) -> None:
        """Take over lost entries now and then, and block on new ones in between.
        Both happen here because both use this queue's share of the free slots."""
        client = self._reader_factory()
        loop = asyncio.get_running_loop()
        period_s = self._reclaim_period_s()
        block_ms = int(min(BLOCK_MS, period_s * 1000))
        reclaim_at = loop.time()  # at once: a restart finds its predecessor's tasks
        pause = 0.1
        try:
            while not self._stopping.is_set():
                n = await self._slots.take(self._share)
                try:
                    if loop.time() >= reclaim_at:
                        reclaim_at = loop.time() + period_s
                        claimed = await self._claim(q, n)
                        n -= len(claimed)
                        for d in claimed:
                            self._start(d)
                        if n == 0:
                            continue
                    reply = await client.xreadgroup(
                        GROUP, self.consumer, {tasks_key(q): ">"}, count=n, block=block_ms
                    )
                except BaseException as e:
                    self._slots.give(n)
                    if not isinstance(e, _ERRORS):
                        raise
                    if isinstance(e, ResponseError) and "NOGROUP" in str(e):
                        await self._ensure_group(q)
                        continue
                    log.warning("reading queue %s failed (%s); retrying in %.1f s", q, e, pause)
                    await asyncio.sleep(pause)
                    pause = min(5.0, pause * 2)
                    continue
                pause = 0.1
                rows = stream_rows(reply)
                self._slots.give(n - len(rows))
                for entry_id, fields in rows:
                    self._start(Delivery(q, entry_id, fields))
        finally:
            await client.aclose()

    async def _read_now(self, q: str) -> int:
        """Non-blocking read of ready tasks, as many as there are free slots."""
        n = self._slots.take_now(self.concurrency)
        if n == 0:
            return 0
        try:
            reply = await self.redis.xreadgroup(GROUP, self.consumer, {tasks_key(q): ">"}, count=n)
        except BaseException:
            self._slots.give(n)
            raise
        rows = stream_rows(reply)
        self._slots.give(n - len(rows))
        for entry_id, fields in rows:
            self._start(Delivery(q, entry_id, fields))
        return len(rows)

    def _reclaim_period_s(self) -> float:
        return max(0.05, min(self.settings.task_visibility_timeout_s / 2, 30.0))

    async def _reclaim(self, q: str) -> int:
        """Drain mode: take over lost entries, as many as there are free slots."""
        n = self._slots.take_now(self.concurrency)
        if n == 0:
            return 0
        try:
            claimed = await self._claim(q, n)
        except BaseException:
            self._slots.give(n)
            raise
        self._slots.give(n - len(claimed))
        for d in claimed:
            self._start(d)
        return len(claimed)

    async def _claim(self, q: str, n: int) -> list[Delivery]:
        """Up to ``n`` entries idle past the visibility timeout (their worker died),
        now delivered to this worker.  The caller holds ``n`` slots for them."""
        min_idle = int(self.settings.task_visibility_timeout_s * 1000)
        try:
            reply = await self.redis.xautoclaim(
                tasks_key(q), GROUP, self.consumer, min_idle, "0-0", count=n
            )
        except ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            await self._ensure_group(q)
            return []
        rows = [(text(i), f) for i, f in reply[1] if i is not None and f is not None]
        counts = await self._delivery_counts(q, [i for i, _ in rows])
        for entry_id, _ in rows:
            log.warning("queue %s: took over entry %s from a lost worker", q, entry_id)
        return [Delivery(q, i, f, counts.get(i, 2)) for i, f in rows]

    async def _delivery_counts(self, q: str, ids: list[str]) -> dict[str, int]:
        if not ids:
            return {}
        low, high = min(ids, key=id_order), max(ids, key=id_order)
        pending = await self.redis.xpending_range(
            tasks_key(q), GROUP, min=low, max=high, count=len(ids) + 100, consumername=self.consumer
        )
        return {text(p["message_id"]): int(p["times_delivered"]) for p in pending}

    async def _take_own_pending(self) -> None:
        """Run entries delivered to this consumer that it is not running (a reused
        consumer name after a crash, or a read cancelled in flight)."""
        running = {(d.queue, d.entry_id) for d in self._running.values()}
        for q in self.queues:
            reply = await self.redis.xreadgroup(
                GROUP, self.consumer, {tasks_key(q): "0"}, count=1000
            )
            rows = [(i, f) for i, f in stream_rows(reply) if (q, i) not in running and f]
            if not rows:
                continue
            counts = await self._delivery_counts(q, [i for i, _ in rows])
            for entry_id, fields in rows:
                await self._slots.take(1)
                self._start(Delivery(q, entry_id, fields, counts.get(entry_id, 2)))

    # -- running ------------------------------------------------------------------

    def _start(self, d: Delivery) -> None:
        """Run a delivery whose slot was already taken."""
        task = asyncio.create_task(self._run_one(d), name=f"task {d.queue} {d.entry_id}")
        self._running[task] = d
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._slots.give(1)

    async def _run_one(self, d: Delivery) -> None:
        try:
            await self._runner.run(d)
        except _ERRORS as e:
            # Left pending: reclaimed after the visibility timeout and finished then.
            log.error(
                "queue %s entry %s: Redis failed (%s); the task stays pending",
                d.queue,
                d.entry_id,
                e,
            )
        except Exception:
            log.exception(
                "queue %s entry %s: worker error; the task stays pending", d.queue, d.entry_id
            )

    async def _wait_running(self) -> None:
        while self._running:
            await asyncio.wait(list(self._running))

    async def _cancel_running(self) -> None:
        # Only reached on errors or cancellation; the entries stay pending.
        tasks = list(self._running)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- chores ---------------------------------------------------------------------

    def _start_chores(self, *, heartbeat: bool, promote: bool) -> list[asyncio.Task[None]]:
        s = self.settings
        vis = s.task_visibility_timeout_s
        chores = [self._every(max(0.05, vis / 3), self._touch, "touch")]
        if heartbeat:
            chores.append(self._every(s.worker_heartbeat_s, self._heartbeat, "heartbeat"))
        if promote:
            chores.append(asyncio.create_task(self._promote_loop(), name="promote"))
        return chores

    def _every(
        self, period_s: float, fn: Callable[[], Awaitable[Any]], name: str
    ) -> asyncio.Task[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(period_s)
                try:
                    await fn()
                except _ERRORS as e:
                    log.warning("worker %s failed: %s", name, e)
                except Exception:
                    log.exception("worker %s failed", name)

        return asyncio.create_task(loop(), name=name)

    async def _touch(self) -> None:
        by_queue: dict[str, list[str]] = {}
        for d in self._running.values():
            by_queue.setdefault(d.queue, []).append(d.entry_id)
        for q, ids in by_queue.items():
            await self.queue.touch(q, self.consumer, ids)

    async def _heartbeat(self) -> None:
        await self.queue.heartbeat(self.consumer)

    async def _promote_loop(self) -> None:
        while True:
            wait = PROMOTE_MAX_WAIT_S
            # Cleared first: a retry scheduled while this pass runs wakes the next one.
            self._retry_due.clear()
            try:
                for q in self.queues:
                    _, due = await self.queue.promote_due(q)
                    if due is not None:
                        wait = min(wait, max(0.0, (due - now_ms()) / 1000))
            except _ERRORS as e:
                log.warning("moving due retries failed: %s", e)
            except Exception:
                log.exception("moving due retries failed")
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation
            # that lands as the event is set, and this loop would never end (seen
            # once in CI: a worker stop hung in cancel_all).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._retry_due.wait()

    async def _forget_dead_consumers(self) -> None:
        """Delete consumers of workers gone for good that hold no entries (their
        entries were reclaimed), so the group does not grow with every restart."""
        alive = await self.queue.workers()
        cutoff_ms = int(self.settings.worker_stale_s * 10 * 1000)
        for q in self.queues:
            for c in await self.redis.xinfo_consumers(tasks_key(q), GROUP):
                name = text(c["name"])
                if name not in alive and int(c["pending"]) == 0 and int(c["idle"]) > cutoff_ms:
                    await self.redis.xgroup_delconsumer(tasks_key(q), GROUP, name)

    async def _leave(self) -> None:
        with contextlib.suppress(*_ERRORS):
            for q in self.queues:
                summary = await self.redis.xpending_range(
                    tasks_key(q), GROUP, min="-", max="+", count=1, consumername=self.consumer
                )
                if not summary:
                    await self.redis.xgroup_delconsumer(tasks_key(q), GROUP, self.consumer)
            await self.queue.forget_worker(self.consumer)

"""What ``herald worker``, ``herald tasks …`` and ``herald serve``'s in-process worker
run.  ``herald/cli.py`` parses the arguments and settings and calls in here (lazily:
the API itself never imports ``workers``).  A worker process also runs the printer
probe (``HERALD_PRINTER_PROBE``, with a database configured)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any, TypeVar

import orjson
from redis.exceptions import RedisError

from herald.journal.runtime.clients import make_journal, make_redis
from herald.journal.runtime.settings import Settings
from herald.journal.tasks.queue import TaskQueue
from herald.workers.printers import PrinterProbe
from herald.workers.runtime import Worker
from herald.workers.task import TaskRegistry

__all__ = [
    "CommandError",
    "InProcessProbe",
    "InProcessWorker",
    "TasksOptionError",
    "dead",
    "load_tasks",
    "retry",
    "run_worker",
]

log = logging.getLogger("herald.worker")
T = TypeVar("T")


def _say(line: str) -> None:
    """A line for people and scripts on stdout (like ``herald serve``'s "ready")."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class CommandError(Exception):
    """The command cannot do its work; the message says why (the CLI prints it)."""


class TasksOptionError(CommandError):
    """A ``--tasks module[:function]`` that cannot be loaded."""


def load_tasks(registry: TaskRegistry, specs: Sequence[str]) -> None:
    """Call ``module.function(registry)`` (default function: ``register``) for each
    spec.  Modules are imported relative to the current directory too, as uvicorn
    does for its app."""
    if specs and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for spec in specs:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise TasksOptionError(f"--tasks {spec}: cannot import {module_name}: {e}") from e
        fn = getattr(module, attr or "register", None)
        if not callable(fn):
            raise TasksOptionError(
                f"--tasks {spec}: {module_name} has no function {attr or 'register'}"
            )
        try:
            fn(registry)
        except ValueError as e:
            raise TasksOptionError(f"--tasks {spec}: {e}") from e


@contextlib.asynccontextmanager
async def _queue(
    settings: Settings, *, engine: bool = False
) -> AsyncIterator[tuple[TaskQueue, Any]]:
    client = make_redis(settings)
    journal = make_journal(settings, client)
    db = None
    if engine and settings.database_url:
        from herald.journal.runtime.db import (
            make_engine,  # SQLAlchemy is slow to import; workers only
        )

        db = make_engine(settings)
    try:
        yield TaskQueue(client, journal, settings), db
    finally:
        if db is not None:
            await db.dispose()
        await client.aclose()


def run_worker(
    settings: Settings, *, concurrency: int | None, queues: Sequence[str], tasks: Sequence[str]
) -> int:
    """``herald worker``: run until SIGTERM/SIGINT, finish the running tasks, return 0.
    A second signal cancels the running tasks (they are reclaimed later) and returns 130."""
    from herald.workers.kinds import default_registry

    registry = default_registry()
    load_tasks(registry, tasks)

    async def main() -> int:
        async with _queue(settings, engine=True) as (queue, engine):
            worker = Worker(
                registry,
                redis=queue.redis,
                journal=queue.journal,
                settings=settings,
                engine=engine,
                queue=queue,
                concurrency=concurrency,
                queues=queues or None,
            )
            loop = asyncio.get_running_loop()
            running = asyncio.create_task(worker.run())
            probe = _printer_probe(settings, queue, engine)
            probing = asyncio.create_task(_run_probe(probe)) if probe is not None else None
            signals = 0

            def on_signal() -> None:
                nonlocal signals
                signals += 1
                if probe is not None:
                    probe.request_stop()
                if signals == 1:
                    worker.request_stop()
                else:
                    running.cancel()
                    if probing is not None:
                        probing.cancel()

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, on_signal)
            try:
                if await _set_before_end(worker.ready, running):
                    _say(
                        f"herald: worker {worker.consumer} ready on queues "
                        f"{', '.join(worker.queues)} (concurrency {worker.concurrency}; "
                        f"kinds {', '.join(registry.kinds())})"
                    )
                if await _set_before_end(worker.draining, running):
                    _say(
                        f"herald: worker stopping: no new tasks; finishing {worker.running} running"
                    )
                try:
                    await running
                except asyncio.CancelledError:
                    return 130
                except (RedisError, OSError) as e:
                    sys.stderr.write(f"herald: worker stopped: Redis failed: {e}\n")
                    return 1
            finally:
                if probing is not None and probe is not None:
                    probe.request_stop()  # the worker stopped on its own: so does the probe
                    with contextlib.suppress(asyncio.CancelledError):
                        await probing
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            _say("herald: worker stopped")
            return 0

    return asyncio.run(main())


def _printer_probe(settings: Settings, queue: TaskQueue, engine: Any) -> PrinterProbe | None:
    if not settings.printer_probe or engine is None:
        return None
    return PrinterProbe(engine=engine, redis=queue.redis, journal=queue.journal, settings=settings)


async def _run_probe(probe: PrinterProbe) -> None:
    """Run the probe until it is asked to stop; it never takes the worker down."""

    def ready(waited: asyncio.Task[bool]) -> None:
        if not waited.cancelled():
            _say(
                f"herald: printer probe {probe.name} ready (every {probe.interval_s:g} s, "
                f"{probe.concurrency} at once)"
            )

    announce = asyncio.create_task(probe.ready.wait())
    announce.add_done_callback(ready)
    try:
        await probe.run()
    except Exception:
        log.exception("the printer probe stopped on an error")
    finally:
        announce.cancel()


async def _set_before_end(event: asyncio.Event, running: asyncio.Task[None]) -> bool:
    """Wait until ``event`` is set or ``running`` ends; whether ``event`` is set."""
    waiter = asyncio.create_task(event.wait())
    await asyncio.wait([waiter, running], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    return event.is_set()


def dead(settings: Settings, queue: str, limit: int) -> None:
    """``herald tasks dead``: the dead-letter entries as JSON lines, newest first."""

    async def main() -> list[dict[str, Any]]:
        async with _queue(settings) as (tq, _):
            return await tq.dead(queue, limit)

    for item in _run(main()):
        sys.stdout.write(orjson.dumps(item).decode() + "\n")


def retry(settings: Settings, task_id: str, queue: str | None) -> bool:
    """``herald tasks retry ID``: re-queue a dead task; False if it is not dead."""

    async def main() -> bool:
        async with _queue(settings) as (tq, _):
            return await tq.retry_dead(task_id, queue=queue)

    return _run(main())


def _run(main: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(main)
    except (RedisError, OSError) as e:
        raise CommandError(f"Redis unavailable: {e}") from e


class InProcessProbe:
    """``herald serve``'s own printer probe, on the app's clients (``state``: the app's
    AppState).  Started once the app is up; stopped, its probes in flight finished,
    before the clients close."""

    def __init__(self) -> None:
        self.probe: PrinterProbe | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self, state: Any) -> None:
        if state is None or state.engine is None or state.redis is None:
            log.info("no printer probe: it needs Redis and PostgreSQL")
            return
        self.probe = PrinterProbe(
            engine=state.engine, redis=state.redis, journal=state.journal, settings=state.settings
        )
        self.task = asyncio.create_task(_run_probe(self.probe), name="printer probe")

    def request_stop(self) -> None:
        if self.probe is not None:
            self.probe.request_stop()

    async def stop(self, force: Any = lambda: False) -> None:
        if self.task is None:
            return
        self.request_stop()
        while not self.task.done():
            if force():
                self.task.cancel()
            await asyncio.wait([self.task], timeout=0.1)
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class InProcessWorker:
    """``herald serve``'s own worker, on the app's clients (``state`` is the app's
    AppState: ``redis``, ``journal``, ``settings``, ``engine``, ``tasks``).  Started
    once the app is up; stopped — running tasks finished — before its clients close."""

    def __init__(self) -> None:
        self.worker: Worker | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self, state: Any) -> None:
        if state is None or state.tasks is None:
            log.info("no in-process worker: the task queue needs Redis")
            return
        from herald.workers.kinds import default_registry

        self.worker = Worker(
            default_registry(),
            redis=state.tasks.redis,
            journal=state.journal,
            settings=state.settings,
            engine=state.engine,
            queue=state.tasks,
        )
        self.task = asyncio.create_task(self._run(self.worker), name="in-process worker")

    @staticmethod
    async def _run(worker: Worker) -> None:
        try:
            await worker.run()
        except Exception:
            log.exception("the in-process worker stopped on an error")

    def request_stop(self) -> None:
        if self.worker is not None:
            self.worker.request_stop()

    async def stop(self, force: Any = lambda: False) -> None:
        """Wait for the running tasks; ``force()`` turning true cancels them instead."""
        if self.task is None:
            return
        self.request_stop()
        while not self.task.done():
            if force():
                self.task.cancel()
            await asyncio.wait([self.task], timeout=0.1)
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

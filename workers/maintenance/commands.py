"""What ``herald scheduler`` and ``herald serve``'s in-process scheduler run.
``herald/cli.py`` parses the settings and calls in here (the API never imports
``workers``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from herald.journal.maintenance.store import MaintenanceStore
from herald.journal.runtime.clients import make_journal, make_redis
from herald.journal.runtime.settings import Settings
from herald.journal.tasks.queue import TaskQueue
from herald.workers.maintenance.scheduler import Scheduler

__all__ = ["InProcessScheduler", "run_scheduler"]

log = logging.getLogger("herald.scheduler")


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run_scheduler(settings: Settings) -> int:
    """``herald scheduler``: passes until SIGTERM/SIGINT, then return 0.  A pass in
    flight finishes first (a claim is one short transaction)."""
    from herald.journal.runtime.db import make_engine

    async def main() -> int:
        client = make_redis(settings)
        journal = make_journal(settings, client)
        engine = make_engine(settings)
        scheduler = Scheduler(
            MaintenanceStore(engine),
            TaskQueue(client, journal, settings),
            journal=journal,
            redis=client,
            settings=settings,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, scheduler.request_stop)
        try:
            _say(
                f"herald: scheduler {scheduler.id} ready (queue {settings.maintenance_queue}, "
                f"catch-up {settings.scheduler_catchup_s} s)"
            )
            await scheduler.run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await engine.dispose()
            await client.aclose()
        _say("herald: scheduler stopped")
        return 0

    return asyncio.run(main())


class InProcessScheduler:
    """``herald serve``'s own scheduler, on the app's clients (``state`` is the app's
    AppState).  Started once the app is up, stopped before its clients close."""

    def __init__(self) -> None:
        self.scheduler: Scheduler | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self, state: Any) -> None:
        if state is None or state.tasks is None or state.engine is None:
            log.info("no in-process scheduler: it needs Redis and PostgreSQL")
            return
        self.scheduler = Scheduler(
            MaintenanceStore(state.engine),
            state.tasks,
            journal=state.journal,
            redis=state.tasks.redis,
            settings=state.settings,
        )
        self.task = asyncio.create_task(self._run(self.scheduler), name="in-process scheduler")

    @staticmethod
    async def _run(scheduler: Scheduler) -> None:
        try:
            await scheduler.run()
        except Exception:
            log.exception("the in-process scheduler stopped on an error")

    def request_stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.request_stop()

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

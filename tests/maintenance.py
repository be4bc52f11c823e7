"""What the maintenance tests share: an isolated environment per test (its own task
queue and job keys), and readers of the ``maintenance`` topic that wait on the
stream itself (blocking XREAD), never on sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from herald.journal.maintenance import TOPIC, Job, MaintenanceStore
from herald.journal.positions import Target
from herald.journal.redis import RedisJournal
from herald.journal.runtime.db import make_engine
from herald.journal.runtime.settings import Settings
from herald.journal.tables import maintenance_jobs
from herald.journal.tasks.queue import TaskQueue, dead_key, retry_key, tasks_key
from herald.workers.kinds import default_registry
from herald.workers.maintenance.scheduler import Scheduler
from herald.workers.runtime import Worker
from tests.conftest import DATABASE_URL, REDIS_URL

ROOT = Path(__file__).resolve().parents[1]
HERALD = str(Path(sys.executable).with_name("herald"))
TOPIC_KEY = Target.topic(TOPIC).stream_key
DEADLINE_S = 60.0
# A process's "ready" line: several start at once on a busy machine, each importing
# the whole stack.
START_S = 180.0


@dataclass
class Maint:
    """One test's maintenance world: jobs keyed ``<name>-…``, runs on queue ``<name>``."""

    name: str
    settings: Settings
    engine: AsyncEngine
    redis: aioredis.Redis
    journal: RedisJournal
    store: MaintenanceStore
    tasks: TaskQueue
    keys: list[str] = field(default_factory=list)

    async def job(self, suffix: str, job_type: str = "noop", **kw: Any) -> Job:
        key = f"{self.name}-{suffix}"
        self.keys.append(key)
        return await self.store.create_job(key, job_type, **kw)

    def scheduler(
        self,
        clock: Callable[[], datetime] | None = None,
        scheduler_id: str | None = None,
        **overrides: Any,
    ) -> Scheduler:
        """A scheduler on this test's queue; ``overrides`` are settings."""
        unknown = set(overrides) - set(Settings.model_fields)
        assert not unknown, f"not settings: {unknown}"
        settings = self.settings.model_copy(update=overrides)
        extra: dict[str, Any] = {"scheduler_id": scheduler_id}
        if clock is not None:
            extra["clock"] = clock
        return Scheduler(
            self.store,
            self.tasks,
            journal=self.journal,
            redis=self.redis,
            settings=settings,
            **extra,
        )

    def worker(self, **overrides: Any) -> Worker:
        settings = self.settings.model_copy(update=overrides)
        return Worker(
            default_registry(),
            redis=self.redis,
            journal=self.journal,
            settings=settings,
            engine=self.engine,
            queue=self.tasks,
            queues=[self.name],
        )

    async def topic_position(self) -> str:
        rows = await self.redis.xrevrange(TOPIC_KEY, count=1)
        return rows[0][0].decode() if rows else "0-0"

    async def events(self, after: str = "0-0") -> list[tuple[str, dict[str, Any]]]:
        """This test's ``maintenance.*`` envelopes (by job key), oldest first."""
        rows = await self.redis.xrange(TOPIC_KEY, f"({after}" if after != "0-0" else "-", "+")
        out = []
        for _, fields in rows:
            data = orjson.loads(fields[b"e"])["data"]
            if str(data.get("key", "")).startswith(self.name + "-"):
                out.append((fields[b"t"].decode(), data))
        return out

    async def wait_for_events(
        self, predicate: Callable[[list[tuple[str, dict[str, Any]]]], bool], after: str = "0-0"
    ) -> list[tuple[str, dict[str, Any]]]:
        """Block on the topic stream until this test's events satisfy ``predicate``."""
        reader = aioredis.Redis.from_url(REDIS_URL, socket_timeout=None)
        last = after
        try:
            async with asyncio.timeout(DEADLINE_S):
                while not predicate(found := await self.events(after)):
                    reply = await reader.xread({TOPIC_KEY: last}, block=1000)
                    for _, rows in reply or []:
                        last = rows[-1][0].decode()
        finally:
            await reader.aclose()
        return found


async def maint_env(name: str, **overrides: Any) -> AsyncIterator[Maint]:
    """The body of a fixture: yields a ``Maint`` and removes its jobs (their runs go
    with them) and queue keys afterwards."""
    values: dict[str, Any] = {
        "redis_url": REDIS_URL,
        "database_url": DATABASE_URL,
        "maintenance_queue": name,
        "task_backoff_s": 0.05,
        "maintenance_heartbeat_s": 0.2,
        **overrides,
    }
    settings = Settings(**values)
    engine = make_engine(settings)
    redis = aioredis.Redis.from_url(REDIS_URL)
    journal = RedisJournal(redis)
    env = Maint(
        name,
        settings,
        engine,
        redis,
        journal,
        MaintenanceStore(engine),
        TaskQueue(redis, journal, settings),
    )
    try:
        yield env
    finally:
        async with engine.begin() as conn:
            await conn.execute(
                delete(maintenance_jobs).where(maintenance_jobs.c.key.like(f"{name}-%"))
            )
        await redis.delete(tasks_key(name), retry_key(name), dead_key(name))
        await redis.aclose()
        await engine.dispose()


class HeraldCommand:
    """A real ``herald <args>`` process on the test services, its output collected."""

    def __init__(self, *args: str, **env: str) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        self.env.update(
            {
                "HERALD_REDIS_URL": REDIS_URL,
                "HERALD_DATABASE_URL": DATABASE_URL,
                "HERALD_LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
                **env,
            }
        )
        self.proc = subprocess.Popen(
            [HERALD, *args],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_line(self, prefix: str, timeout: float = START_S) -> str:
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((x for x in self.lines if x.startswith(prefix)), None), timeout
            )
        assert found, f"no line {prefix!r} from herald:\n{''.join(self.lines)}"
        return found

    async def await_line(self, prefix: str) -> str:
        return await asyncio.to_thread(self.wait_line, prefix)

    async def stop(self) -> int:
        """SIGTERM, and the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, DEADLINE_S)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.kill()
        self._pump_thread.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def herald_commands(*commands: tuple[str, ...], **env: str) -> Iterator[list[HeraldCommand]]:
    """Start each ``herald`` command (same environment); kill all on the way out."""
    procs: list[HeraldCommand] = []
    try:
        for args in commands:
            procs.append(HeraldCommand(*args, **env))
        yield procs
    finally:
        for proc in procs:
            proc.close()

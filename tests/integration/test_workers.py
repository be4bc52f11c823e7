"""Workers against real Redis: retries with backoff, dead letters, a running task
kept from being reclaimed, and real ``herald worker`` processes killed (SIGKILL:
another worker reclaims the task and completes it exactly once) or stopped
(SIGTERM: the running task completes, then the process exits 0).

Every test uses its own queue and user (the ``unique`` fixture).  Tests wait on
events — a task's own ``started`` event, a line the worker prints, an entry in a
stream read with a blocking XREAD — never on sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from herald.journal.positions import Target
from herald.journal.redis import RedisJournal
from herald.journal.runtime.settings import Settings
from herald.journal.tasks.keys import dead_key, retry_key, status_key, tasks_key
from herald.journal.tasks.queue import GROUP, TaskQueue
from herald.workers.kinds import default_registry
from herald.workers.runtime import Worker
from tests import worker_kinds
from tests.conftest import DATABASE_URL, REDIS_URL
from tests.servers import HeraldProcess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HERALD = str(Path(sys.executable).with_name("herald"))
DEADLINE_S = 30.0


@dataclass
class Env:
    redis: aioredis.Redis
    journal: RedisJournal
    settings: Settings
    tasks: TaskQueue
    name: str  # the queue and the user of this test

    def worker(self, **overrides: Any) -> Worker:
        registry = default_registry()
        worker_kinds.register(registry)
        settings = self.settings.model_copy(update=overrides)
        return Worker(
            registry,
            redis=self.redis,
            journal=self.journal,
            settings=settings,
            queue=self.tasks,
            queues=[self.name],
        )

    async def enqueue(self, kind: str, payload: dict[str, Any], **kw: Any) -> str:
        return await self.tasks.enqueue(kind, self.name, payload, queue=self.name, **kw)

    async def events(self) -> list[tuple[str, dict[str, Any]]]:
        rows = await self.redis.xrange(Target.user(self.name).stream_key)
        return [(f[b"t"].decode(), orjson.loads(f[b"e"])["data"]) for _, f in rows]

    async def wait_for(self, type_: str, count: int = 1) -> list[dict[str, Any]]:
        """Block on the user's stream until ``count`` events of ``type_`` are in it."""
        key = Target.user(self.name).stream_key
        reader = aioredis.Redis.from_url(REDIS_URL, socket_timeout=None)
        last = "0-0"
        found: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(DEADLINE_S):
                while len(found) < count:
                    reply = await reader.xread({key: last}, block=1000)
                    for _, rows in reply or []:
                        for entry_id, fields in rows:
                            last = entry_id.decode()
                            if fields[b"t"].decode() == type_:
                                found.append(orjson.loads(fields[b"e"])["data"])
        finally:
            await reader.aclose()
        return found


@pytest.fixture
async def env(unique: str) -> AsyncIterator[Env]:
    client = aioredis.Redis.from_url(REDIS_URL)
    journal = RedisJournal(client)
    settings = Settings(  # type: ignore[call-arg]
        redis_url=REDIS_URL, database_url=DATABASE_URL, task_backoff_s=0.05
    )
    yield Env(client, journal, settings, TaskQueue(client, journal, settings), unique)
    user = Target.user(unique)
    await client.delete(
        tasks_key(unique), retry_key(unique), dead_key(unique), user.stream_key, user.meta_key
    )
    await client.aclose()


async def test_retries_back_off_exponentially_then_succeed(env: Env):
    task_id = await env.enqueue("test.flaky", {"succeed_at": 3})
    await env.worker().run_until_idle()
    starts = worker_kinds.STARTS[task_id]
    assert len(starts) == 3
    # Backoff 0.05 s, doubling: >= 0.05 s before the 2nd attempt, >= 0.1 s before the 3rd.
    assert starts[1] - starts[0] >= 0.045 and starts[2] - starts[1] >= 0.095
    assert [t for t, _ in await env.events()] == ["test.flaky.queued", "test.flaky.completed"]
    result = await env.tasks.result(task_id)
    assert result is not None and result["attempt"] == 3 and result["result"] == {"attempt": 3}
    assert await env.redis.xlen(tasks_key(env.name)) == 0
    assert await env.redis.zcard(retry_key(env.name)) == 0


async def test_always_failing_task_fails_once_goes_to_dead_letters_and_can_be_requeued(env: Env):
    task_id = await env.enqueue("test.broken", {"n": 1})
    await env.worker().run_until_idle()
    assert worker_kinds.CALLS[task_id] == 3
    failed = [d for t, d in await env.events() if t == "test.broken.failed"]
    assert len(failed) == 1
    assert failed[0]["code"] == "internal_error" and "secret" not in failed[0]["message"]
    (dead,) = await env.tasks.dead(env.name)
    assert (dead["task_id"], dead["attempts"]) == (task_id, 3)

    assert await env.tasks.retry_dead(task_id) is True
    assert await env.tasks.dead(env.name) == []
    assert await env.redis.xlen(tasks_key(env.name)) == 1
    await env.worker().run_until_idle()
    assert worker_kinds.CALLS[task_id] == 6  # a fresh set of attempts
    assert [t for t, _ in await env.events()] == ["test.broken.queued", "test.broken.failed"] * 2
    assert [d["task_id"] for d in await env.tasks.dead(env.name)] == [task_id]


async def test_a_long_running_task_is_not_reclaimed_and_its_worker_heartbeats(env: Env):
    gate = f"{env.name}:gate"
    worker = env.worker(task_visibility_timeout_s=0.3, worker_heartbeat_s=0.1)
    running = asyncio.create_task(worker.run())
    try:
        task_id = await env.enqueue("test.gate", {"gate": gate})
        await env.wait_for("test.gate.started")
        # Four visibility timeouts pass; a thief may take only entries idle longer.
        deadline = time.monotonic() + 1.2
        while time.monotonic() < deadline:
            reply = await env.redis.xautoclaim(
                tasks_key(env.name), GROUP, "thief", 300, "0-0", count=10, justid=True
            )
            assert reply == [], "the running task was reclaimed"
        status = await env.tasks.status(task_id)
        assert status is not None and status["status"] == "running" and status["attempt"] == 1
        seen = await env.tasks.workers()
        assert abs(seen[worker.consumer] - time.time() * 1000) < 5000
        await env.redis.rpush(gate, "go")
        await env.wait_for("test.gate.completed")
    finally:
        worker.request_stop()
        await asyncio.wait_for(running, DEADLINE_S)
    assert worker_kinds.CALLS[task_id] == 1
    assert worker.consumer not in await env.tasks.workers()  # a clean stop says goodbye
    await env.redis.delete(gate, status_key(task_id))


class WorkerProcess:
    """A real ``herald worker --tasks tests.worker_kinds`` on one queue."""

    def __init__(self, queue: str, **env: str) -> None:
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
        args = [HERALD, "worker", "--queue", queue, "--tasks", "tests.worker_kinds"]
        self.proc = subprocess.Popen(
            args,
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

    def wait_line(self, prefix: str) -> str:
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((x for x in self.lines if x.startswith(prefix)), None), DEADLINE_S
            )
        assert found, f"no line {prefix!r} from the worker:\n{''.join(self.lines)}"
        return found

    async def await_line(self, prefix: str) -> str:
        return await asyncio.to_thread(self.wait_line, prefix)

    async def exit_code(self) -> int:
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
def worker_process(queue: str, **env: str) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(queue, **env)
    try:
        yield proc
    finally:
        proc.close()


async def test_sigkill_mid_task_another_worker_reclaims_and_completes_it_once(env: Env):
    gate = f"{env.name}:gate"
    fast = {"HERALD_TASK_VISIBILITY_TIMEOUT_S": "1"}
    task_id = await env.enqueue("test.gate", {"gate": gate})
    with worker_process(env.name, **fast) as first:
        (started,) = await env.wait_for("test.gate.started")
        assert started["pid"] == first.proc.pid and started["attempt"] == 1
        first.kill()  # SIGKILL mid-task: no cleanup, no ack
    with worker_process(env.name, **fast) as second:
        again = (await env.wait_for("test.gate.started", count=2))[1]
        assert again["pid"] == second.proc.pid and again["attempt"] == 2
        await env.redis.rpush(gate, "go")
        (completed,) = await env.wait_for("test.gate.completed")
        assert completed == {"task_id": task_id, "attempt": 2, "pid": second.proc.pid}
        second.proc.send_signal(signal.SIGTERM)  # finishes (acknowledges) the task first
        assert await second.exit_code() == 0
    # Finished for good: no entry left to reclaim, so no second completion can come.
    assert await env.redis.xlen(tasks_key(env.name)) == 0
    types = [t for t, _ in await env.events()]
    assert types.count("test.gate.completed") == 1
    assert types == [
        "test.gate.queued",
        "test.gate.started",
        "test.gate.started",
        "test.gate.completed",
    ]
    assert (await env.tasks.result(task_id) or {})["status"] == "completed"
    await env.redis.delete(gate, status_key(task_id))


async def test_sigterm_finishes_the_running_task_takes_no_new_one_and_exits_0(env: Env):
    gate = f"{env.name}:gate"
    task_id = await env.enqueue("test.gate", {"gate": gate})
    with worker_process(env.name) as proc:
        await proc.await_line("herald: worker ")
        await env.wait_for("test.gate.started")
        proc.proc.send_signal(signal.SIGTERM)
        line = await proc.await_line("herald: worker stopping")
        assert "finishing 1 running" in line
        waiting = await env.enqueue("test.gate", {"gate": gate})  # must stay queued
        await env.redis.rpush(gate, "go")
        assert await proc.exit_code() == 0
        assert proc.lines[-1].startswith("herald: worker stopped")
    (completed,) = [d for t, d in await env.events() if t == "test.gate.completed"]
    assert completed["task_id"] == task_id
    assert (await env.tasks.status(waiting) or {})["status"] == "queued"
    assert await env.redis.xlen(tasks_key(env.name)) == 1
    await env.redis.delete(gate, status_key(task_id), status_key(waiting))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    environ.update({"HERALD_REDIS_URL": REDIS_URL, "HERALD_DATABASE_URL": DATABASE_URL})
    return subprocess.run([HERALD, *args], env=environ, capture_output=True, text=True, check=False)


async def test_tasks_dead_and_retry_commands(env: Env):
    task_id = await env.enqueue("test.reject", {"why": "bad"})
    await env.worker().run_until_idle()
    listed = await asyncio.to_thread(_cli, "tasks", "dead", "--queue", env.name)
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    dead = orjson.loads(line)
    assert dead["task_id"] == task_id and dead["error"]["code"] == "bad_input"
    retried = await asyncio.to_thread(_cli, "tasks", "retry", task_id)
    assert retried.returncode == 0 and orjson.loads(retried.stdout)["requeued"] is True
    again = await asyncio.to_thread(_cli, "tasks", "retry", task_id)
    assert again.returncode == 1 and "not in the dead-letter stream" in again.stderr
    assert await env.redis.xlen(tasks_key(env.name)) == 1


async def test_herald_serve_runs_a_worker_in_process(tmp_path: Path, unique: str):
    client = aioredis.Redis.from_url(REDIS_URL)
    user = Target.user(unique)
    with HeraldProcess(tmp_path, HERALD_WORKER_IN_PROCESS="true") as server:
        headers = {"Authorization": f"Bearer {server.token('svc', 'service')}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
            r = await http.post("/api/tasks", json={"kind": "herald.noop", "user": unique})
            assert r.status_code == 202, r.text
            task_id = r.json()["task_id"]
            # The owner's stream tells when it is done: block on it, no polling.
            cursor, types = "0-0", []
            async with asyncio.timeout(DEADLINE_S):
                while b"herald.noop.completed" not in types:
                    for _, entries in await client.xread({user.stream_key: cursor}, block=1000):
                        for entry_id, fields in entries:
                            cursor, types = entry_id, [*types, fields[b"t"]]
            owner = {"Authorization": f"Bearer {server.token(unique)}"}
            status = (await http.get(f"/api/tasks/{task_id}", headers=owner)).json()
            assert status["status"] == "completed"
        assert server.stop() < 10
    rows = await client.xrange(user.stream_key)
    assert [f[b"t"] for _, f in rows] == [b"herald.noop.queued", b"herald.noop.completed"]
    await client.delete(user.stream_key, user.meta_key, status_key(task_id))
    await client.aclose()

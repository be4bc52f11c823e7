"""The worker runtime's logic over fakeredis, in drain mode: outcomes, lifecycle
events, dead letters, and finishing the work of a worker that died."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import fakeredis
import orjson
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from herald.journal.positions import ZERO_ID, Target
from herald.journal.redis import RedisJournal
from herald.journal.runtime.settings import Settings
from herald.journal.tasks.keys import tasks_key
from herald.journal.tasks.queue import GROUP, StatusUpdate, TaskQueue
from herald.workers.kinds import default_registry
from herald.workers.runtime import Worker
from herald.workers.task import TaskRegistry
from tests import worker_kinds

USER = "alice"


@dataclass
class Env:
    redis: fakeredis.FakeAsyncRedis
    journal: RedisJournal
    settings: Settings
    queue: TaskQueue
    registry: TaskRegistry

    def worker(self, queue: TaskQueue | None = None, **overrides: Any) -> Worker:
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        return Worker(
            self.registry,
            redis=self.redis,
            journal=self.journal,
            settings=settings,
            queue=queue or self.queue,
        )

    async def events(self, user: str = USER) -> list[tuple[str, dict[str, Any]]]:
        page = await self.journal.read_after(Target.user(user), ZERO_ID, limit=1000)
        return [(e.type, orjson.loads(e.envelope)["data"]) for e in page.entries]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    client = fakeredis.FakeAsyncRedis()
    settings = Settings(redis_url="redis://fake", task_backoff_s=0.01)  # type: ignore[call-arg]
    journal = RedisJournal(client)
    registry = default_registry()
    worker_kinds.register(registry)
    yield Env(client, journal, settings, TaskQueue(client, journal, settings), registry)
    await client.aclose()


async def test_completed_event_carries_task_id_context_and_result(env: Env):
    task_id = await env.queue.enqueue(
        "test.flaky", USER, {"succeed_at": 1}, context={"source_id": "s1"}
    )
    assert (await env.queue.status(task_id) or {})["status"] == "queued"
    await env.worker().run_until_idle()
    assert await env.events() == [
        ("test.flaky.queued", {"task_id": task_id, "source_id": "s1"}),
        ("test.flaky.completed", {"task_id": task_id, "source_id": "s1", "attempt": 1}),
    ]
    result = await env.queue.result(task_id)
    assert result is not None and result["status"] == "completed"
    assert result["result"] == {"attempt": 1} and result["user"] == USER
    assert await env.redis.xlen(tasks_key("default")) == 0  # acknowledged entries are deleted


async def test_noop_is_built_in(env: Env):
    task_id = await env.queue.enqueue("herald.noop", USER, {})
    await env.worker().run_until_idle()
    assert [t for t, _ in await env.events()] == ["herald.noop.queued", "herald.noop.completed"]
    assert (await env.queue.result(task_id) or {})["result"] == {}


async def test_retries_then_succeeds(env: Env):
    task_id = await env.queue.enqueue("test.flaky", USER, {"succeed_at": 3})
    await env.worker().run_until_idle()
    assert [t for t, _ in await env.events()] == ["test.flaky.queued", "test.flaky.completed"]
    assert worker_kinds.CALLS[task_id] == 3
    assert (await env.queue.result(task_id) or {})["attempt"] == 3


async def test_unexpected_error_fails_with_a_generic_message_and_goes_to_dead_letters(env: Env):
    task_id = await env.queue.enqueue("test.broken", USER, {"x": 1})
    await env.worker().run_until_idle()
    events = await env.events()
    assert [t for t, _ in events] == ["test.broken.queued", "test.broken.failed"]
    failed = events[-1][1]
    assert failed["code"] == "internal_error" and failed["attempts"] == 3
    assert "secret" not in orjson.dumps(failed).decode()  # never the exception's text
    assert worker_kinds.CALLS[task_id] == 3
    (dead,) = await env.queue.dead()
    assert dead["task_id"] == task_id and dead["error"]["code"] == "internal_error"
    assert dead["payload"] == {"x": 1} and dead["attempts"] == 3


async def test_task_error_without_retry_fails_at_once(env: Env):
    task_id = await env.queue.enqueue("test.reject", USER, {})
    await env.worker().run_until_idle()
    assert worker_kinds.CALLS[task_id] == 1
    result = await env.queue.result(task_id)
    assert result is not None and result["status"] == "failed"
    assert result["error"] == {"code": "bad_input", "message": "the input cannot be used"}


async def test_unknown_kind_fails_with_unknown_task(env: Env):
    task_id = await env.queue.enqueue("nobody.knows", USER, {})
    await env.worker().run_until_idle()
    ((_, failed),) = [e for e in await env.events() if e[0] == "nobody.knows.failed"]
    assert failed["code"] == "unknown_task" and failed["task_id"] == task_id
    assert [d["task_id"] for d in await env.queue.dead()] == [task_id]


async def test_a_result_that_is_not_a_dict_is_an_internal_error(env: Env):
    task_id = await env.queue.enqueue("test.wrong", USER, {})
    await env.worker().run_until_idle()
    assert worker_kinds.CALLS[task_id] == 1  # a programming error is not retried
    assert (await env.queue.result(task_id) or {})["error"]["code"] == "internal_error"


async def test_retry_dead_requeues_once_and_publishes_queued_again(env: Env):
    task_id = await env.queue.enqueue("test.reject", USER, {})
    await env.worker().run_until_idle()
    assert await env.queue.retry_dead(task_id) is True
    assert await env.queue.retry_dead(task_id) is False  # no longer dead
    assert await env.queue.dead() == []
    assert (await env.queue.status(task_id) or {})["status"] == "queued"
    await env.worker().run_until_idle()
    types = [t for t, _ in await env.events()]
    # Each delivery's failure is its own event (keyed by entry, not by task).
    assert types == ["test.reject.queued", "test.reject.failed"] * 2
    assert await env.queue.retry_dead("unknown-task") is False


async def test_deferred_task_is_completed_by_its_continuation(env: Env):
    task_id = await env.queue.enqueue("test.later", USER, {}, events="test.two")
    await env.worker().run_until_idle()
    assert (await env.queue.status(task_id) or {})["status"] == "deferred"
    assert await env.queue.result(task_id) is None
    await env.queue.enqueue(
        "test.finish", USER, {}, task_id=task_id, events="test.two", publish_queued=False
    )
    await env.worker().run_until_idle()
    assert [t for t, _ in await env.events()] == [
        "test.two.queued",
        "test.two.waiting",
        "test.two.completed",
    ]
    assert (await env.queue.result(task_id) or {})["result"] == {"finished": True}


async def test_progress_is_throttled_and_ends_at_100_percent(env: Env):
    await env.queue.enqueue("test.progress", USER, {"total": 5000})
    await env.worker().run_until_idle()
    progress = [d for t, d in await env.events() if t == "test.progress.progress"]
    assert progress[-1]["current"] == progress[-1]["total"] == 5000
    # 5,000 calls within far less than a second: the first and the last.
    assert 2 <= len(progress) <= 11
    assert all("task_id" in d for d in progress)


class AckFailsOnce(TaskQueue):
    """A worker 'killed' after publishing and recording the outcome, before the ack."""

    failed = False

    async def ack(self, queue: str, entry_id: str, *, status: StatusUpdate | None = None) -> bool:
        if not self.failed:
            self.failed = True
            if status is not None:
                await self.set_status(status.task_id, status.status, **status.values)
            raise RedisConnectionError("killed before the ack")
        return await super().ack(queue, entry_id, status=status)


async def test_a_lost_ack_is_finished_by_another_worker_with_one_completed_event(env: Env):
    dying = AckFailsOnce(env.redis, env.journal, env.settings)
    task_id = await env.queue.enqueue("test.flaky", USER, {"succeed_at": 1})
    await env.worker(dying).run_until_idle()
    assert (await env.redis.xpending(tasks_key("default"), GROUP))["pending"] == 1
    # Another worker takes the idle delivery over and finds its recorded outcome.
    await env.worker(task_visibility_timeout_s=1e-4).run_until_idle()
    completed = [e for e in await env.events() if e[0] == "test.flaky.completed"]
    assert len(completed) == 1
    assert worker_kinds.CALLS[task_id] == 1  # finished, not run again
    assert await env.redis.xlen(tasks_key("default")) == 0


async def test_a_reclaimed_task_runs_again_as_its_next_attempt(env: Env):
    task_id = await env.queue.enqueue("test.flaky", USER, {"succeed_at": 1})
    # A worker takes the task and dies before doing anything with it.
    await env.redis.xgroup_create(tasks_key("default"), GROUP, id="0", mkstream=True)
    await env.redis.xreadgroup(GROUP, "dead-worker", {tasks_key("default"): ">"}, count=1)
    await env.worker(task_visibility_timeout_s=1e-4).run_until_idle()
    result = await env.queue.result(task_id)
    assert result is not None and result["status"] == "completed" and result["attempt"] == 2


async def test_a_task_whose_workers_keep_dying_fails_as_worker_lost(env: Env):
    task_id = await env.queue.enqueue("test.flaky", USER, {"succeed_at": 1}, max_attempts=1)
    await env.redis.xgroup_create(tasks_key("default"), GROUP, id="0", mkstream=True)
    await env.redis.xreadgroup(GROUP, "dead-worker", {tasks_key("default"): ">"}, count=1)
    await env.worker(task_visibility_timeout_s=1e-4).run_until_idle()
    assert task_id not in worker_kinds.CALLS
    result = await env.queue.result(task_id)
    assert result is not None and result["error"]["code"] == "worker_lost"
    assert [d["task_id"] for d in await env.queue.dead()] == [task_id]


async def test_drain_mode_leaves_no_heartbeat_and_no_consumer(env: Env):
    await env.queue.enqueue("herald.noop", USER, {})
    await env.worker().run_until_idle()
    assert await env.queue.workers() == {}
    assert await env.redis.xinfo_consumers(tasks_key("default"), GROUP) == []

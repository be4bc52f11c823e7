"""The task queue on Redis Cluster: its scripts (ack, retry, promote, bury, requeue,
touch, heartbeat) and real workers with retries, dead letters and heartbeats.

The tests are the one-server ones (``tests/unit/test_worker_queue.py``,
``tests/integration/test_workers.py``) with their fixtures pointed at the cluster;
the worker's blocking reads go through its cluster client for blocking reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from herald.journal.positions import Target
from herald.journal.redis import RedisJournal
from herald.journal.runtime.cluster import make_cluster
from herald.journal.runtime.settings import Settings
from herald.journal.tasks.keys import WORKERS_KEY, dead_key, retry_key, tasks_key
from herald.journal.tasks.queue import TaskQueue
from tests.integration import test_workers as workers
from tests.integration.test_workers import (
    test_a_long_running_task_is_not_reclaimed_and_its_worker_heartbeats,
    test_always_failing_task_fails_once_goes_to_dead_letters_and_can_be_requeued,
    test_retries_back_off_exponentially_then_succeed,
)
from tests.unit.test_worker_queue import (
    test_a_continuation_publishes_no_queued_and_keeps_the_first_queued_at,
    test_enqueue_publishes_queued_then_adds_the_task,
    test_heartbeats_are_unix_ms_and_stale_fields_are_dropped,
)

pytestmark = pytest.mark.integration

__all__ = [
    "test_a_continuation_publishes_no_queued_and_keeps_the_first_queued_at",
    "test_a_long_running_task_is_not_reclaimed_and_its_worker_heartbeats",
    "test_always_failing_task_fails_once_goes_to_dead_letters_and_can_be_requeued",
    "test_enqueue_publishes_queued_then_adds_the_task",
    "test_heartbeats_are_unix_ms_and_stale_fields_are_dropped",
    "test_retries_back_off_exponentially_then_succeed",
]


@pytest.fixture
async def queue(cluster_settings: Settings) -> AsyncIterator[TaskQueue]:
    client = make_cluster(cluster_settings)
    settings = cluster_settings.model_copy(update={"worker_stale_s": 1.0})
    await client.delete(WORKERS_KEY, tasks_key("ingest"), Target.user("u1").stream_key)
    yield TaskQueue(client, RedisJournal(client), settings)
    await client.aclose()


class ClusterEnv(workers.Env):
    async def wait_for(self, type_: str, count: int = 1) -> list[dict[str, Any]]:
        """Block on the user's stream (on its shard) until ``count`` events of ``type_``."""
        key = Target.user(self.name).stream_key
        reader = make_cluster(self.settings, blocking=True)
        last, found = "0-0", []
        try:
            async with asyncio.timeout(workers.DEADLINE_S):
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
async def env(
    cluster_client: aioredis.Redis, cluster_settings: Settings, unique: str
) -> AsyncIterator[workers.Env]:
    journal = RedisJournal(cluster_client)
    tasks = TaskQueue(cluster_client, journal, cluster_settings)
    yield ClusterEnv(cluster_client, journal, cluster_settings, tasks, unique)
    user = Target.user(unique)
    for key in (tasks_key(unique), retry_key(unique), dead_key(unique)):
        await cluster_client.delete(key)
    await cluster_client.delete(user.stream_key, user.meta_key)

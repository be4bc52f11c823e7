"""A local Redis Cluster for the whole session: 3 primaries + 3 replicas of the
machine's ``redis-server`` on free loopback ports (``tests/rediscluster.py``).

Skipped, with the reason, only where ``redis-server`` >= 7 is absent.  The suites
here run the contracts written for one Redis (journal, hub, budgets, tickets, task
queue) on the cluster by importing their tests and overriding their fixture.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from herald.journal.runtime.cluster import make_cluster
from herald.journal.runtime.settings import Settings
from tests.conftest import DATABASE_URL
from tests.rediscluster import LocalCluster, unavailable


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster]:
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    cluster = LocalCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_settings(local_cluster: LocalCluster) -> Settings:
    return Settings(  # type: ignore[call-arg]
        redis_url=local_cluster.url,
        redis_cluster=True,
        redis_cluster_nodes=local_cluster.nodes[1:],
        database_url=DATABASE_URL,
        task_backoff_s=0.05,
    )


@pytest.fixture
async def cluster_client(cluster_settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = make_cluster(cluster_settings)
    yield client
    await client.aclose()

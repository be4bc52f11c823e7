"""The journal contract on Redis Cluster (``tests/contract/test_journal_contract.py``).

Every script touches the keys of one slot only; one that did not would fail here
with ``CROSSSLOT`` (or ``MOVED`` for a key on another shard).  Stream names are
random, so one run spreads its streams over all three primaries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from herald.journal.base import Journal
from herald.journal.redis import RedisJournal
from tests.contract.test_journal_contract import *  # noqa: F403
from tests.contract.test_journal_contract import LIMITS

pytestmark = pytest.mark.integration


@pytest.fixture
async def journal(cluster_client: aioredis.Redis) -> AsyncIterator[Journal]:
    """Replaces the contract's parametrised fixture: the cluster implementation only."""
    yield RedisJournal(cluster_client, LIMITS)

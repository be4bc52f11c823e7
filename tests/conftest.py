"""Shared fixtures.

Integration tests talk to real servers named by ``HERALD_TEST_REDIS_URL`` and
``HERALD_TEST_DATABASE_URL`` (``.ci/run`` sets them; the defaults are the local
services).  Tests isolate themselves with unique stream names, never FLUSHALL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

REDIS_URL = os.environ.get("HERALD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = os.environ.get(
    "HERALD_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def redis_url_with_db(url: str, db: int) -> str:
    """The same server, another logical database (``unix://`` URLs take ``?db=``)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = "&".join(q for q in parts.query.split("&") if q and not q.startswith("db="))
        return f"unix://{parts.path}?" + "&".join(filter(None, [query, f"db={db}"]))
    return parts._replace(path=f"/{db}").geturl()


@pytest.fixture
def unique() -> str:
    """A name no other test uses: isolates streams on the shared Redis."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def real_redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as e:  # pragma: no cover - a CI misconfiguration, not a test outcome
        pytest.fail(f"integration Redis at {REDIS_URL} is not reachable: {e}")
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def migrated_database() -> str:
    """The test database, migrated to head once per session (idempotent)."""
    from herald import migrations

    migrations.upgrade(DATABASE_URL)
    return DATABASE_URL


@pytest.fixture
async def engine(migrated_database: str) -> AsyncIterator[AsyncEngine]:
    from herald.journal.runtime.db import make_engine
    from herald.journal.runtime.settings import Settings

    built = make_engine(Settings.load(database_url=migrated_database, redis_url="memory://"))
    yield built
    await built.dispose()

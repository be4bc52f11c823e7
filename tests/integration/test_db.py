"""The database rules of DESIGN §7, against a real PostgreSQL, on a scratch database.

* Work in flight when its connections are killed (``pg_terminate_backend``: what a
  server restart does to every client) succeeds through exactly one retry on a
  fresh connection, and the pool is not thrown away: connections nobody killed
  keep their server process.
* An ``IntegrityError`` is an answer and is never retried.
* A retry that fails too raises ``DatabaseUnavailable`` (after two attempts).
* ``herald serve`` refuses a database one revision behind head, naming both.

Waits poll the server's own view (``pg_stat_activity``) under a deadline.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from herald import migrations
from herald.journal.runtime.db import DatabaseUnavailable, make_engine, run_in_transaction
from herald.journal.runtime.settings import Settings
from tests.conftest import DATABASE_URL, REDIS_URL
from tests.servers import free_port

pytestmark = pytest.mark.integration

HERALD = str(Path(sys.executable).with_name("herald"))
ADMIN_URL = DATABASE_URL.replace("+psycopg", "")
LOCK_KEY = 6_000_001
POOL_SIZE = 4
IN_FLIGHT = 3


@pytest.fixture
def scratch(unique: str) -> Iterator[str]:
    """A database of its own, so terminating its connections disturbs no other test."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{unique}"')
    try:
        yield make_url(DATABASE_URL).set(database=unique).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{unique}" WITH (FORCE)')


@pytest.fixture
async def engine(scratch: str) -> AsyncIterator[AsyncEngine]:
    settings = Settings.load(
        database_url=scratch, redis_url="memory://", db_pool_size=POOL_SIZE, db_max_overflow=0
    )
    built = make_engine(settings)
    yield built
    await built.dispose()


async def _until(admin: psycopg.AsyncConnection, query: str, *params: object) -> None:
    """Poll the server (each poll is a round trip) until ``query`` returns true."""
    deadline = time.monotonic() + 10
    while True:
        row = await (await admin.execute(query, params)).fetchone()
        if row is not None and row[0]:
            return
        assert time.monotonic() < deadline, f"timed out waiting for: {query} {params}"


# Backends of a database blocked on a lock, other than the ones in a list.
_WAITING = (
    "SELECT count(*) = %s FROM pg_stat_activity WHERE datname = %s"
    " AND wait_event_type = 'Lock' AND NOT pid = ANY(%s)"
)
_GONE = "SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = ANY(%s))"


async def _pids(engine: AsyncEngine, n: int) -> list[int]:
    """Check out ``n`` pooled connections at once and return their server pids."""
    all_out = asyncio.Barrier(n)

    async def one() -> int:
        async with engine.connect() as conn:
            pid = int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            await all_out.wait()  # hold it until all n are out: n distinct connections
            return pid

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def test_in_flight_work_survives_killed_connections_with_one_retry(
    engine: AsyncEngine, scratch: str
) -> None:
    database = make_url(scratch).database
    pool = engine.pool
    warm = await _pids(engine, POOL_SIZE)
    assert len(set(warm)) == POOL_SIZE

    attempts: Counter[int] = Counter()

    def unit(i: int) -> Callable[[AsyncConnection], Awaitable[int]]:
        async def work(conn: AsyncConnection) -> int:
            attempts[i] += 1
            # Blocks while the test holds the lock: the request is in flight.
            await conn.execute(text(f"SELECT pg_advisory_xact_lock_shared({LOCK_KEY})"))
            return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())

        return work

    async with (
        await psycopg.AsyncConnection.connect(
            make_url(scratch).set(drivername="postgresql").render_as_string(hide_password=False),
            autocommit=True,
        ) as holder,
        await psycopg.AsyncConnection.connect(ADMIN_URL, autocommit=True) as admin,
    ):
        await holder.execute(f"SELECT pg_advisory_lock({LOCK_KEY})")
        flights = [
            asyncio.create_task(run_in_transaction(engine, unit(i))) for i in range(IN_FLIGHT)
        ]
        await _until(admin, _WAITING, IN_FLIGHT, database, [])
        rows = await (
            await admin.execute(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND wait_event_type = 'Lock'",
                (database,),
            )
        ).fetchall()
        killed = [pid for pid, _ in rows]
        assert len(killed) == IN_FLIGHT
        # Every unit is retried once and blocks again, on a live connection.
        await _until(admin, _GONE, killed)
        await _until(admin, _WAITING, IN_FLIGHT, database, killed)
        assert all(t.done() is False for t in flights)
        await holder.execute(f"SELECT pg_advisory_unlock({LOCK_KEY})")
        served_by = await asyncio.wait_for(asyncio.gather(*flights), 10)

    assert attempts == {i: 2 for i in range(IN_FLIGHT)}
    assert not set(killed) & set(served_by)
    assert engine.pool is pool
    # The connection nobody killed kept its server process: only the broken ones
    # were replaced (SQLAlchemy's default would recycle every pooled connection).
    survivors = set(warm) - set(killed)
    assert survivors
    after = set(served_by) | set(await _pids(engine, POOL_SIZE))
    assert survivors <= after


async def test_integrity_error_is_not_retried(engine: AsyncEngine) -> None:
    async def create(conn: AsyncConnection) -> None:
        await conn.execute(text("CREATE TABLE item (id int PRIMARY KEY)"))
        await conn.execute(text("INSERT INTO item VALUES (1)"))

    await run_in_transaction(engine, create)
    attempts = 0

    async def duplicate(conn: AsyncConnection) -> None:
        nonlocal attempts
        attempts += 1
        await conn.execute(text("INSERT INTO item VALUES (1)"))

    with pytest.raises(IntegrityError):
        await run_in_transaction(engine, duplicate)
    assert attempts == 1


async def test_a_second_failure_is_database_unavailable(engine: AsyncEngine) -> None:
    attempts = 0

    async def doomed(conn: AsyncConnection) -> None:
        nonlocal attempts
        attempts += 1
        await conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))

    with pytest.raises(DatabaseUnavailable, match="terminating connection"):
        await run_in_transaction(engine, doomed)
    assert attempts == 2
    # The pool still serves: the two dead connections were replaced, nothing else.
    assert await run_in_transaction(engine, _one) == 1


async def test_no_server_is_database_unavailable() -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/postgres"
    settings = Settings.load(database_url=url, redis_url="memory://", db_connect_timeout_s=2)
    engine = make_engine(settings)
    try:
        with pytest.raises(DatabaseUnavailable, match="unavailable"):
            await run_in_transaction(engine, _one)
    finally:
        await engine.dispose()


async def test_a_statement_timeout_is_not_retried(scratch: str) -> None:
    settings = Settings.load(
        database_url=scratch, redis_url="memory://", db_statement_timeout_ms=50
    )
    engine = make_engine(settings)
    attempts = 0

    async def slow(conn: AsyncConnection) -> None:
        nonlocal attempts
        attempts += 1
        await conn.execute(text("SELECT pg_sleep(5)"))

    try:
        with pytest.raises(OperationalError, match="statement timeout"):
            await run_in_transaction(engine, slow)
        assert attempts == 1
    finally:
        await engine.dispose()


async def test_no_free_connection_is_database_unavailable_without_a_retry(scratch: str) -> None:
    settings = Settings.load(
        database_url=scratch,
        redis_url="memory://",
        db_pool_size=1,
        db_max_overflow=0,
        db_pool_timeout_s=0.2,
    )
    engine = make_engine(settings)
    try:
        async with engine.connect() as held:
            await held.execute(text("SELECT 1"))
            began = time.monotonic()
            with pytest.raises(DatabaseUnavailable, match="no free database connection"):
                await run_in_transaction(engine, _one)
            assert time.monotonic() - began < 1.0  # one wait, not two
    finally:
        await engine.dispose()


async def _one(conn: AsyncConnection) -> int:
    return int((await conn.execute(text("SELECT 1"))).scalar_one())


def test_serve_refuses_a_database_one_revision_behind(scratch: str, tmp_path: Path) -> None:
    script = ScriptDirectory.from_config(migrations.config(scratch))
    head = migrations.head_revision()
    behind = script.get_revision(head).down_revision
    assert isinstance(behind, str), "needs at least two linear revisions"
    migrations.upgrade(scratch, behind)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env.update(HERALD_REDIS_URL=REDIS_URL, HERALD_DATABASE_URL=scratch, HERALD_JWT_SECRET="j" * 40)
    refused = subprocess.run(
        [HERALD, "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert f"database is at revision {behind}, expected {head}" in refused.stderr
    assert "herald migrate" in refused.stderr
    assert "ready on" not in refused.stdout

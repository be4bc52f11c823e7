"""Embedded Redis + PostgreSQL supervisor: lifecycle, persistence and crash cleanup."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import psutil
import psycopg
import pytest
import redis

from herald.journal.runtime.embedded import EmbeddedServices

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import json, sys, threading
from pathlib import Path
from herald.journal.runtime.embedded import EmbeddedServices

services = EmbeddedServices(Path(sys.argv[1]))
services.start()
urls = {"redis_url": services.redis_url, "database_url": services.database_url}
print(json.dumps(urls), flush=True)
threading.Event().wait()
"""


def _read_line(stream: IO[bytes], timeout: float, what: str) -> bytes:
    """One line from a child's stdout, within a deadline (select, not polling)."""
    readable, _, _ = select.select([stream], [], [], timeout)
    if not readable:
        pytest.fail(f"timed out after {timeout}s waiting for {what}")
    return stream.readline()


def _wait_exit(proc: psutil.Process, timeout: float, what: str) -> None:
    """Until ``proc`` (not our child, so not waitable) exits: a pidfd becomes
    readable when the process terminates, reaped or not."""
    try:
        fd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        return
    try:
        if not select.select([fd], [], [], timeout)[0]:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
    finally:
        os.close(fd)


def _servers_under(root: Path) -> list[psutil.Process]:
    """Live redis-server/postgres processes whose command line mentions `root`."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        info = proc.info
        if (
            info["name"] in ("redis-server", "postgres")
            and info["status"] != psutil.STATUS_ZOMBIE
            and str(root) in " ".join(info["cmdline"] or ())
        ):
            found.append(proc)
    return found


def _pg_url(services: EmbeddedServices) -> str:
    return services.database_url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "data"
    yield root
    # Never leak servers from a failed test.
    leftovers = _servers_under(root)
    for proc in leftovers:
        proc.kill()
    assert not leftovers, f"leaked processes: {leftovers}"


def _write(services: EmbeddedServices, value: str) -> None:
    with redis.Redis.from_url(services.redis_url) as client:
        client.xadd("events", {"value": value})
    with psycopg.connect(_pg_url(services), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS notes (value text)")
        conn.execute("INSERT INTO notes VALUES (%s)", (value,))


def _read(services: EmbeddedServices) -> tuple[list[str], list[str]]:
    with redis.Redis.from_url(services.redis_url, decode_responses=True) as client:
        stream = [fields["value"] for _, fields in client.xrange("events")]
    with psycopg.connect(_pg_url(services)) as conn:
        rows = [row[0] for row in conn.execute("SELECT value FROM notes ORDER BY value")]
    return stream, rows


def test_start_stop_persists_and_leaves_nothing_running(data_dir: Path) -> None:
    services = EmbeddedServices(data_dir)
    try:
        began = time.monotonic()
        services.start()
        print(f"first start (initdb): {time.monotonic() - began:.2f}s")
        services.start()  # idempotent
        assert services.redis_url.startswith(("unix://", "redis://"))
        assert services.database_url.startswith("postgresql+psycopg://postgres@/herald?host=")
        _write(services, "one")
    finally:
        began = time.monotonic()
        services.stop()
        print(f"stop: {time.monotonic() - began:.2f}s")
    services.stop()  # idempotent
    assert _servers_under(data_dir) == []

    with EmbeddedServices(data_dir) as again:
        assert _read(again) == (["one"], ["one"])
    assert _servers_under(data_dir) == []


def test_sigkilled_owner_leaks_no_redis_and_next_start_recovers(data_dir: Path) -> None:
    with (data_dir.parent / "child.log").open("wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(data_dir)],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            stdout=subprocess.PIPE,
            stderr=log,
        )
    assert child.stdout is not None
    try:
        line = _read_line(child.stdout, 60, "child services")
        assert line, (data_dir.parent / "child.log").read_text()
        urls = json.loads(line)
        crashed = EmbeddedServices(data_dir, urls["redis_url"], urls["database_url"])
        _write(crashed, "before-crash")
        redis_servers = [
            p for p in psutil.Process(child.pid).children() if p.name() == "redis-server"
        ]
        assert len(redis_servers) == 1
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child.stdout.close()

    _wait_exit(redis_servers[0], 15, "redis-server to follow its dead parent")
    # Postgres is daemonised by pg_ctl, so it survives; the next start must cope with it.
    assert [p.name() for p in _servers_under(data_dir)] == ["postgres"]

    with EmbeddedServices(data_dir) as services:
        assert _read(services) == (["before-crash"], ["before-crash"])
        _write(services, "after-crash")
    assert _servers_under(data_dir) == []


def test_a_redis_server_that_dies_is_reaped_and_restarted_on_the_same_address(
    data_dir: Path,
) -> None:
    with EmbeddedServices(data_dir) as services:
        _write(services, "before")
        (old,) = [p for p in _servers_under(data_dir) if p.name() == "redis-server"]
        old.kill()
        deadline = time.monotonic() + 20
        while True:
            alive = [p for p in _servers_under(data_dir) if p.name() == "redis-server"]
            fresh = [p for p in alive if p.pid != old.pid]
            if fresh:
                with (
                    contextlib.suppress(redis.RedisError, OSError),
                    redis.Redis.from_url(services.redis_url, socket_timeout=1) as client,
                ):
                    if client.ping():
                        break
            assert time.monotonic() < deadline, "redis-server was not restarted"
        # The dead one was reaped: no <defunct> child left behind.
        with contextlib.suppress(psutil.NoSuchProcess):
            assert old.status() != psutil.STATUS_ZOMBIE
        assert services.redis_restarts == 1
        # Its append-only file is read back: nothing acknowledged before the crash is lost
        # beyond the fsync interval, and new writes work on the same URL.
        _write(services, "after")
    assert _servers_under(data_dir) == []

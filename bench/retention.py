"""Retention throughput, and what it costs the API: delete old message events and
trim old stream entries while clients page ``GET /api/events/history``.

Run from the repository root with the project installed (``pip install -e .``)::

    python bench/retention.py [--events N] [--streams M] [--old-per-stream K]
                              [--readers C] [--idle-s S] [--json]

Setup (untimed): a scratch PostgreSQL database of its own (created, migrated to head,
dropped at the end) gets N message events written 40 days ago (plus one recent event
per message, which must survive); Redis gets M user streams, each with K entries
written 10 days ago (the journal's own entry format) followed by 5 recent ones
published through the journal.  One ``herald serve`` (no in-process worker or
scheduler, a replay budget high enough never to refuse) serves the API.

Then C concurrent clients page ``/api/events/history`` (limit 100, each on its own
bench user, resuming after a recent entry) — first for S seconds with nothing else
running (the idle baseline), then while retention runs the same code as the
maintenance job types: ``cleanup_message_events`` in batches of
``HERALD_RETENTION_BATCH`` (``message_events_retention``), then ``trim_streams`` with
``XTRIM MINID`` over the bench's streams (``stream_retention``; the SCAN pattern is
limited to the bench's users, so nothing else on a shared Redis is trimmed).

Reported: rows/s deleted, entries/s and streams/s trimmed, and the p50/p99/max
latency of history requests idle and during retention.  PASS when every old row and
entry is gone, every recent one kept, no request failed, and the p99 during
retention is at most ``max(250 ms, 5 x the idle p99)``: retention must not stall
the API.  All Redis keys carry a random ``bench-<hex>`` prefix and are deleted at
the end (never FLUSHALL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import orjson
import psycopg
import redis.asyncio as aioredis
from _common import delete_prefix, herald_command, machine_basics, percentile
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from herald import migrations
from herald.journal.base import JournalLimits, PublishRequest
from herald.journal.envelope import prepare
from herald.journal.maintenance import Cutoff
from herald.journal.messages.store import cleanup_message_events
from herald.journal.positions import Target
from herald.journal.redis import RedisJournal
from herald.journal.runtime.db import make_engine
from herald.journal.runtime.settings import Settings
from herald.journal.tables import message_events
from herald.workers.maintenance.retention import trim_streams

DEFAULT_REDIS = os.environ.get("HERALD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
DEFAULT_DB = os.environ.get(
    "HERALD_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
SECRET = "bench-retention-secret-bench-retention-0123"
EVENTS_PER_MESSAGE = 1000
RECENT_PER_STREAM = 5
PAGE = 100
P99_FLOOR_MS = 250.0
P99_FACTOR = 5.0


class BenchError(Exception):
    pass


class Serve:
    """``herald serve`` on a free port; ready once it prints its "ready" line."""

    def __init__(self, redis_url: str, database_url: str) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        env.update(
            HERALD_REDIS_URL=redis_url,
            HERALD_DATABASE_URL=database_url,
            HERALD_JWT_SECRET=SECRET,
            HERALD_LOG_LEVEL="WARNING",
            HERALD_WORKER_IN_PROCESS="false",
            HERALD_SCHEDULER_IN_PROCESS="false",
            HERALD_REPLAY_BUDGET="100000000",
            PYTHONUNBUFFERED="1",
        )
        self._dir = tempfile.TemporaryDirectory(prefix="herald-bench-")
        self.proc = subprocess.Popen(
            [herald_command(), "serve", "--port", str(self.port)],
            cwd=self._dir.name,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.log: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()
        if not self._ready.wait(60):
            self.stop()
            raise BenchError("herald serve did not start:\n" + "".join(self.log[-30:]))
        self.url = f"http://127.0.0.1:{self.port}"

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)
            if line.startswith("herald: ready"):
                self._ready.set()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._dir.cleanup()


@contextlib.contextmanager
def scratch_database(url: str) -> Any:
    name = f"herald_bench_{secrets.token_hex(5)}"
    admin = url.replace("+psycopg", "")
    scratch = make_url(url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        migrations.upgrade(scratch)
        yield scratch
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def seed_events(engine: Any, n: int) -> float:
    """N events 40 days old in messages of EVENTS_PER_MESSAGE, plus one recent event
    per message; returns the seconds it took."""
    began = time.perf_counter()
    messages = max(1, -(-n // EVENTS_PER_MESSAGE))
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO messages (id, user_id) "
                "SELECT gen_random_uuid(), 'bench' FROM generate_series(1, :m)"
            ),
            {"m": messages},
        )
        await conn.execute(
            text(
                """
                INSERT INTO message_events
                    (message_id, sequence_no, event_type, payload, created_at)
                SELECT m.id, g.n, 'answer', '{"text": "retention bench"}'::jsonb,
                       now() - interval '40 days'
                FROM (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM messages) m
                CROSS JOIN LATERAL generate_series(0, :per - 1) AS g(n)
                WHERE m.k * :per + g.n < :n
                """
            ),
            {"per": EVENTS_PER_MESSAGE, "n": n},
        )
        await conn.execute(
            text(
                "INSERT INTO message_events (message_id, sequence_no, event_type, payload) "
                "SELECT id, :per, 'answer', '{}'::jsonb FROM messages"
            ),
            {"per": EVENTS_PER_MESSAGE},
        )
        await conn.execute(text("ANALYZE message_events"))
    return time.perf_counter() - began


async def seed_streams(
    redis: aioredis.Redis, prefix: str, streams: int, old: int
) -> tuple[list[str], dict[str, str]]:
    """``streams`` users with ``old`` entries 10 days old and RECENT_PER_STREAM new
    ones; returns the users and, per user, the id of its first recent entry."""
    users = [f"{prefix}-{i}" for i in range(streams)]
    start_ms = int((datetime.now(UTC) - timedelta(days=10)).timestamp() * 1000)
    tail = prepare("bench.old", {"n": 0}, source="/bench", subject=None, max_bytes=65536)
    async with redis.pipeline(transaction=False) as pipe:
        for count, user in enumerate(users, 1):
            target, previous = Target.user(user), ""
            for i in range(old):
                entry_id = f"{start_ms + i}-0"
                fields = {"t": tail.type, "p": previous, "e": tail.with_id(entry_id)}
                pipe.xadd(target.stream_key, fields, id=entry_id)  # type: ignore[arg-type]
                previous = entry_id
            pipe.hset(target.meta_key, mapping={"epoch": secrets.token_hex(6), "last": previous})
            if count % 20 == 0:
                await pipe.execute()
        await pipe.execute()
    journal = RedisJournal(redis, JournalLimits())
    requests = [
        PublishRequest(Target.user(u), "bench.recent", {"n": i}, None, None)
        for u in users
        for i in range(RECENT_PER_STREAM)
    ]
    first: dict[str, str] = {}
    for start in range(0, len(requests), 1000):
        chunk = requests[start : start + 1000]
        for request, result in zip(chunk, await journal.publish_many(chunk), strict=True):
            first.setdefault(request.target.name, str(result.id))
    return users, first


async def readers(
    url: str, users: list[str], first: dict[str, str], n: int, stop: asyncio.Event
) -> tuple[list[float], int]:
    """C clients paging history until ``stop``: latencies (ms) and failed requests."""
    latencies: list[float] = []
    failures = 0
    exp = int(time.time()) + 3600

    async def client(i: int) -> None:
        nonlocal failures
        user = users[i % len(users)]
        token = jwt.encode({"sub": user, "exp": exp}, SECRET, algorithm="HS256")
        params = {"after": first[user], "limit": str(PAGE)}
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as http:
            while not stop.is_set():
                began = time.perf_counter()
                r = await http.get("/api/events/history", params=params)
                latencies.append((time.perf_counter() - began) * 1000)
                if r.status_code != 200 or len(r.json()["events"]) != RECENT_PER_STREAM - 1:
                    failures += 1

    await asyncio.gather(*(client(i) for i in range(n)))
    return latencies, failures


def summary(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"requests": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    return {
        "requests": len(latencies),
        "p50_ms": round(percentile(latencies, 0.5), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2),
    }


async def run(args: argparse.Namespace, database_url: str) -> dict[str, Any]:
    settings = Settings(redis_url=args.redis_url, database_url=database_url)  # type: ignore[call-arg]
    engine = make_engine(settings)
    redis = aioredis.Redis.from_url(args.redis_url)
    prefix = f"bench-{secrets.token_hex(4)}"
    server = None
    try:
        print(f"seeding {args.events:,} message events …", file=sys.stderr)
        seed_s = await seed_events(engine, args.events)
        print(
            f"seeding {args.streams:,} streams x {args.old_per_stream} old entries …",
            file=sys.stderr,
        )
        users, first = await seed_streams(redis, prefix, args.streams, args.old_per_stream)
        server = Serve(args.redis_url, database_url)

        stop = asyncio.Event()
        idle = asyncio.create_task(readers(server.url, users, first, args.readers, stop))
        await asyncio.sleep(args.idle_s)
        stop.set()
        idle_lat, idle_fail = await idle

        stop = asyncio.Event()
        during = asyncio.create_task(readers(server.url, users, first, args.readers, stop))
        await asyncio.sleep(0.5)  # the readers are running before retention starts
        cutoff = Cutoff.older_than(86400, datetime.now(UTC))
        began = time.perf_counter()
        deleted = await cleanup_message_events(engine, cutoff.at, batch=settings.retention_batch)
        events_s = time.perf_counter() - began
        pattern = Target.user(f"{prefix}-x").stream_key.replace(f"{prefix}-x", f"{prefix}-*")
        began = time.perf_counter()
        trimmed = await trim_streams(redis, [pattern], cutoff, settings.retention_batch)
        streams_s = time.perf_counter() - began
        stop.set()
        during_lat, during_fail = await during

        async with engine.connect() as conn:
            left_old = (
                await conn.execute(
                    select(func.count()).where(message_events.c.created_at < cutoff.at)
                )
            ).scalar_one()
            left_new = (
                await conn.execute(select(func.count()).select_from(message_events))
            ).scalar_one()
        lengths = [await redis.xlen(Target.user(u).stream_key) for u in users]
    finally:
        if server is not None:
            server.stop()
        await delete_prefix(redis, prefix)
        await redis.aclose()
        await engine.dispose()

    idle_sum, during_sum = summary(idle_lat), summary(during_lat)
    bar = max(P99_FLOOR_MS, P99_FACTOR * idle_sum["p99_ms"])
    checks = {
        "old events all deleted": left_old == 0 and deleted.deleted == args.events,
        "recent events kept": left_new == max(1, -(-args.events // EVENTS_PER_MESSAGE)),
        "old entries all trimmed": trimmed["deleted"] == args.streams * args.old_per_stream,
        "recent entries kept": set(lengths) == {RECENT_PER_STREAM},
        "no failed request": idle_fail == 0 and during_fail == 0,
        f"p99 during retention <= {bar:.0f} ms": during_sum["p99_ms"] <= bar,
    }
    return {
        "machine": machine_basics(),
        "config": vars(args) | {"batch": settings.retention_batch},
        "seed_s": round(seed_s, 1),
        "message_events": {
            "deleted": deleted.deleted,
            "batches": deleted.batches,
            "seconds": round(events_s, 2),
            "rows_per_s": round(deleted.deleted / events_s) if events_s else None,
        },
        "streams": {
            **trimmed,
            "seconds": round(streams_s, 2),
            "entries_per_s": round(trimmed["deleted"] / streams_s) if streams_s else None,
            "streams_per_s": round(trimmed["streams"] / streams_s) if streams_s else None,
        },
        "history_idle": idle_sum | {"failed": idle_fail},
        "history_during_retention": during_sum | {"failed": during_fail},
        "checks": checks,
        "verdict": "PASS" if all(checks.values()) else "FAIL",
    }


def report(result: dict[str, Any]) -> None:
    ev, st = result["message_events"], result["streams"]
    idle, during = result["history_idle"], result["history_during_retention"]
    print(
        f"message events: {ev['deleted']:,} deleted in {ev['seconds']} s "
        f"({ev['rows_per_s']:,} rows/s, {ev['batches']} batches)"
    )
    print(
        f"streams: {st['deleted']:,} entries of {st['streams']:,} streams trimmed in "
        f"{st['seconds']} s ({st['entries_per_s']:,} entries/s, {st['streams_per_s']:,} streams/s)"
    )
    for name, s in (("idle", idle), ("during retention", during)):
        print(
            f"history {name:>17}: {s['requests']:,} requests, p50 {s['p50_ms']} ms, "
            f"p99 {s['p99_ms']} ms, max {s['max_ms']} ms, failed {s['failed']}"
        )
    for check, ok in result["checks"].items():
        print(f"  {'PASS' if ok else 'FAIL'}  {check}")
    print(result["verdict"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--redis-url", default=DEFAULT_REDIS)
    p.add_argument("--database-url", default=DEFAULT_DB, help="a scratch database is made here")
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--old-per-stream", type=int, default=100)
    p.add_argument("--readers", type=int, default=8, help="concurrent history clients")
    p.add_argument("--idle-s", type=float, default=10.0, help="length of the idle baseline")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    with scratch_database(args.database_url) as url:
        result = asyncio.run(run(args, url))
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        report(result)
    raise SystemExit(0 if result["verdict"] == "PASS" else 1)


if __name__ == "__main__":
    main()

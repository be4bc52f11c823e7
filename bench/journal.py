"""Write throughput of the message writer (PostgreSQL) against one INSERT + commit per
row and raw COPY, and live publish latency with the writer on and off, in one run.

Run from the repository root (the ``herald`` package must be importable)::

    python bench/journal.py [--database-url URL] [--redis-url URL] [--rows N] [--rounds R]

Everything runs in a scratch database (``herald_bench_journal_<hex>``) that the bench
creates on the server of ``--database-url``, migrates, and drops at the end, also on
failure or Ctrl-C.  In Redis it only creates the message counters of the latency
test (random message ids) and deletes them at the end.

Write modes (bench/README.md has the details): ``writer``, ``MessageWriter`` fed by 8
producer tasks a row at a time, as ``emit`` feeds it; ``naive``, one INSERT and one
commit per row; ``copy``, COPY of all rows in one transaction; and on a bare psycopg
connection, committed every B rows (B = the writer's mean flush size in the same
round): ``copy_b``, the same COPY; ``unnest_text_b`` and ``unnest_bin_b``, the
writer's statement with text (``%s``) and with binary (``%b``, as the writer sends
it) parameters; ``copytmp_b``, binary COPY into a temporary table, then ``INSERT …
SELECT … ON CONFLICT DO NOTHING``.  Every mode starts from empty tables, writes the
same prebuilt rows and must store them all.

Live modes: publish latency through ``MessageStreams.message_stream`` to a pub/sub
subscriber in the same event loop, with the writer ``on``, ``off`` (rows dropped)
and ``on+load`` (another producer offers it ``--live-load`` rows/s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import os
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psutil
import psycopg
import redis
import redis.asyncio as aioredis
import sqlalchemy
from _common import machine_basics, percentile
from psycopg.types.json import set_json_dumps
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

import herald.journal.messages.writer as writer_module
from herald import migrations
from herald.journal.messages.keys import channel_of, seq_key_of
from herald.journal.messages.producer import MessageStreams
from herald.journal.messages.writer import MessageWriter, Row, WriterOverloaded
from herald.journal.runtime.db import make_engine
from herald.journal.runtime.metrics import WRITER_FLUSH_ROWS
from herald.journal.runtime.settings import Settings

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
MESSAGES = 8  # messages, and writer producer tasks, per write mode
# The targets.
TARGET_RATE = 50_000.0
TARGET_VS_NAIVE = 20.0
TARGET_VS_COPY = 0.5
TARGET_P99_RATIO = 1.5
TARGET_P99_EXTRA_MS = 1.0

COLUMNS = "message_id, sequence_no, event_type, payload, created_at"
NAIVE_INSERT = (
    f"INSERT INTO message_events ({COLUMNS}) VALUES (%s, %s, %s, %s::jsonb, %s) "
    "ON CONFLICT DO NOTHING"
)
COPY_TEXT = f"COPY message_events ({COLUMNS}) FROM STDIN"
# The writer's own statement and parameters, and the same statement in text format.
UNNEST_BINARY = writer_module._INSERT
UNNEST_TEXT = UNNEST_BINARY.replace("%b", "%s")
TMP_CREATE = (
    "CREATE TEMP TABLE IF NOT EXISTS bench_incoming "
    "(LIKE message_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
TMP_COPY = f"COPY bench_incoming ({COLUMNS}) FROM STDIN (FORMAT BINARY)"
TMP_INSERT = (
    f"INSERT INTO message_events ({COLUMNS}) SELECT {COLUMNS} FROM bench_incoming "
    "ON CONFLICT DO NOTHING"
)
COPY_TYPES = ["uuid", "int4", "text", "jsonb", "timestamptz"]
COUNT = "SELECT count(*) FROM message_events"
NEW_MESSAGES = "INSERT INTO messages (id, user_id) SELECT unnest(%s::uuid[]), 'bench'"


@dataclass(slots=True)
class Sample:
    rows: int
    wall_s: float
    cpu_s: float  # this process's CPU
    server_cpu_s: float  # the local PostgreSQL server's CPU (nan: not measured)
    batch: int = 0  # rows per commit (the writer: mean rows per flush)
    flushes: int = 0
    stall_s: float = 0.0  # the writer: longest time the event loop did not get to run

    @property
    def rate(self) -> float:
        return self.rows / self.wall_s


@dataclass(slots=True)
class Live:
    latencies_ns: list[int]
    emit_ns: list[int]  # how long each ``await emit(...)`` took, producer side
    wall_s: float
    flushes: int
    flush_rows: int


@dataclass(slots=True)
class Bench:
    engine: AsyncEngine
    conninfo: str  # the scratch database, for bare psycopg connections
    redis: aioredis.Redis
    settings: Settings
    local_server: bool  # PostgreSQL runs here: its CPU can be read
    keys: set[str] = field(default_factory=set)


def server_cpu_s(local: bool) -> float:
    """CPU used so far by the local PostgreSQL: its processes, plus the backends that
    exited (counted in the postmaster's children times)."""
    if not local:
        return math.nan
    total = 0.0
    for p in psutil.process_iter(["name", "cpu_times"]):
        t = p.info["cpu_times"]
        if p.info["name"] == "postgres" and t is not None:
            total += t.user + t.system + t.children_user + t.children_system
    return total


class Meter:
    """Wall clock, this process's CPU and the server's CPU over a timed section."""

    def __init__(self, bench: Bench) -> None:
        self.local = bench.local_server
        self.s0 = server_cpu_s(self.local)
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def stop(self, rows: int, batch: int = 0) -> Sample:
        wall, cpu = time.perf_counter() - self.t0, time.process_time() - self.c0
        return Sample(rows, wall, cpu, server_cpu_s(self.local) - self.s0, batch)


async def cpu_used(bench: Bench) -> tuple[float, float]:
    """(CPU used by the whole machine, CPU used by this process, PostgreSQL and Redis),
    so far: their difference over the rounds is the other load."""
    t = psutil.cpu_times()
    busy = t.user + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
    cpu: dict[str, Any] = await bench.redis.info("cpu")
    redis_s = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
    return busy, time.process_time() + server_cpu_s(bench.local_server) + redis_s


# -- rows and tables ---------------------------------------------------------------------


def make_rows(n: int) -> tuple[list[uuid.UUID], list[Row]]:
    """``n`` rows over ``MESSAGES`` new messages, interleaved: row i belongs to message
    i % MESSAGES and carries that message's next sequence number."""
    ids = [uuid.uuid4() for _ in range(MESSAGES)]
    start = datetime.now(UTC)
    step = timedelta(microseconds=10)
    return ids, [
        Row(
            ids[i % MESSAGES], i // MESSAGES, "answer", f'{{"text": " token{i}"}}', start + i * step
        )
        for i in range(n)
    ]


async def reset(bench: Bench, ids: Sequence[uuid.UUID]) -> None:
    async with bench.engine.begin() as conn:
        await conn.exec_driver_sql("TRUNCATE message_events, messages")
        await conn.exec_driver_sql(NEW_MESSAGES, (list(ids),))
    async with bench.engine.connect() as conn:
        await conn.exec_driver_sql("CHECKPOINT")


def flush_histogram() -> tuple[float, float]:
    """(rows, flushes) so far, from the writer's prometheus histogram."""
    rows = flushes = 0.0
    for metric in WRITER_FLUSH_ROWS.collect():
        for s in metric.samples:
            if s.name.endswith("_sum"):
                rows = s.value
            elif s.name.endswith("_count"):
                flushes = s.value
    return rows, flushes


# -- write modes -------------------------------------------------------------------------


async def run_writer(bench: Bench, rows: list[Row]) -> Sample:
    writer = MessageWriter(bench.engine)  # the defaults
    writer.start()
    last = 0  # the newest mark handed out, to any producer

    async def producer(mine: list[Row]) -> None:
        nonlocal last
        for row in mine:
            while True:
                try:
                    writer.reserve(1)
                    break
                except WriterOverloaded:
                    await writer.wait_durable(last - writer.limit // 2)
            last = writer.add([row])
            await asyncio.sleep(0)  # emit awaits Redis between rows

    stall = 0.0

    async def probe() -> None:
        nonlocal stall
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            stall = max(stall, time.perf_counter() - t - 0.001)

    rows0, flushes0 = flush_histogram()
    prober = asyncio.create_task(probe())
    meter = Meter(bench)
    try:
        await asyncio.gather(*(producer(rows[m::MESSAGES]) for m in range(MESSAGES)))
        if not await writer.wait_durable(last, 120):
            raise SystemExit("the writer did not store the rows within 120 s")
        sample = meter.stop(len(rows))
    finally:
        prober.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await prober
        await writer.aclose()
    rows1, flushes1 = flush_histogram()
    sample.flushes = round(flushes1 - flushes0)
    sample.batch = round((rows1 - rows0) / max(1, sample.flushes))
    sample.stall_s = stall
    return sample


async def run_naive(bench: Bench, rows: list[Row]) -> Sample:
    async with bench.engine.connect() as conn:
        meter = Meter(bench)
        for r in rows:
            async with conn.begin():
                await conn.exec_driver_sql(
                    NAIVE_INSERT, (r.message_id, r.seq, r.event_type, r.payload_json, r.created_at)
                )
        return meter.stop(len(rows), batch=1)


Cursor = psycopg.AsyncCursor[Any]
FlushFn = Callable[[Cursor, list[Row]], Awaitable[None]]


async def flush_copy(cur: Cursor, rows: list[Row]) -> None:
    async with cur.copy(COPY_TEXT) as copy:
        for r in rows:
            await copy.write_row((r.message_id, r.seq, r.event_type, r.payload_json, r.created_at))


def flush_unnest(sql: str) -> FlushFn:
    async def flush(cur: Cursor, rows: list[Row]) -> None:
        await cur.execute(sql, writer_module._arrays(rows))

    return flush


async def flush_copy_tmp(cur: Cursor, rows: list[Row]) -> None:
    async with cur.copy(TMP_COPY) as copy:
        copy.set_types(COPY_TYPES)
        for r in rows:
            await copy.write_row((r.message_id, r.seq, r.event_type, r.payload_json, r.created_at))
    await cur.execute(TMP_INSERT)


async def run_batched(bench: Bench, rows: list[Row], batch: int, flush: FlushFn) -> Sample:
    """``flush`` over ``rows``, one transaction per ``batch`` rows, on one bare psycopg
    connection."""
    async with await psycopg.AsyncConnection.connect(bench.conninfo) as conn:
        # The payloads are JSON text already: binary jsonb must send them as they are.
        set_json_dumps(lambda s: s, context=conn)
        await conn.execute(TMP_CREATE)
        await conn.commit()
        parts = [rows[i : i + batch] for i in range(0, len(rows), batch)]
        meter = Meter(bench)
        async with conn.cursor() as cur:
            for part in parts:
                await flush(cur, part)
                await conn.commit()
        return meter.stop(len(rows), batch)


BATCHED: dict[str, FlushFn] = {
    "copy_b": flush_copy,
    "unnest_text_b": flush_unnest(UNNEST_TEXT),
    "unnest_bin_b": flush_unnest(UNNEST_BINARY),
    "copytmp_b": flush_copy_tmp,
}
WRITE_MODES = ("writer", "naive", "copy", *BATCHED)
LIVE_MODES = ("on", "off", "on+load")


async def write_round(bench: Bench, mode: str, rows: list[Row], batch: int) -> Sample:
    if mode == "writer":
        return await run_writer(bench, rows)
    if mode == "naive":
        return await run_naive(bench, rows)
    if mode == "copy":
        return await run_batched(bench, rows, len(rows), flush_copy)
    return await run_batched(bench, rows, batch, BATCHED[mode])


# -- live latency ------------------------------------------------------------------------


class SubscriberLost(Exception):
    """The latency test's pub/sub connection was closed under it: some other client
    of the same Redis ran ``CLIENT KILL TYPE pubsub`` (fault-injection tests do)."""


class DroppingWriter(MessageWriter):
    """The writer "off": rows count as durable at once and are dropped."""

    def add(self, rows: list[Row]) -> int:
        self.release(len(rows))
        self._added += len(rows)
        self._durable = self._added
        return self._added


async def run_live(bench: Bench, mode: str, events: int, pause_s: float, load: int) -> Live:
    # A large buffer, so the load can never make ``emit`` fail with WriterOverloaded.
    kind = DroppingWriter if mode == "off" else MessageWriter
    writer = kind(bench.engine, buffer_max=1_000_000)
    streams = MessageStreams(
        engine=bench.engine, redis=bench.redis, writer=writer, settings=bench.settings
    )
    message_id = uuid.uuid4()
    bench.keys.add(seq_key_of(message_id))
    load_ids = [uuid.uuid4() for _ in range(MESSAGES)]
    if mode == "on+load":
        async with bench.engine.begin() as conn:
            await conn.exec_driver_sql(NEW_MESSAGES, (load_ids,))
    received: list[tuple[int, bytes]] = []
    got_all = asyncio.Event()
    lost = False
    pubsub = bench.redis.pubsub()

    async def subscriber() -> None:
        nonlocal lost
        clock = time.perf_counter_ns
        try:
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if msg is not None:
                    received.append((clock(), msg["data"]))
                    if len(received) >= events:
                        got_all.set()
        except redis.ConnectionError:
            lost = True
            got_all.set()

    async def loader() -> None:
        # Another producer, offering ``load`` rows/s in steps of 5 ms.
        step = max(1, round(load * 0.005))
        due = time.perf_counter()
        i = 0
        while True:
            now = datetime.now(UTC)
            part = [
                Row(load_ids[j % MESSAGES], j // MESSAGES, "answer", f'{{"text": "{j}"}}', now)
                for j in range(i, i + step)
            ]
            writer.reserve(len(part))
            writer.add(part)
            i += step
            due += 0.005
            await asyncio.sleep(max(0.0, due - time.perf_counter()))

    try:
        await pubsub.subscribe(channel_of(message_id))
        while await pubsub.get_message(timeout=1.0) is None:
            pass  # the subscribe confirmation
    except redis.ConnectionError as e:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        raise SubscriberLost(str(e)) from e
    writer.start()
    tasks = [asyncio.create_task(subscriber())]
    if mode == "on+load":
        tasks.append(asyncio.create_task(loader()))
    rows0, flushes0 = flush_histogram()
    emit_ns: list[int] = []
    clock = time.perf_counter_ns
    try:
        async with streams.message_stream(message_id, "bench") as stream:
            t0 = time.perf_counter()
            for i in range(events):
                start = clock()
                await stream.emit("answer", {"t": start, "text": f" token{i}"})
                emit_ns.append(clock() - start)
                await asyncio.sleep(pause_s)
            async with asyncio.timeout(10):
                await got_all.wait()
            if lost:
                raise SubscriberLost("the server closed the subscriber's connection")
            wall = time.perf_counter() - t0
            rows1, flushes1 = flush_histogram()
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await writer.aclose()
    latencies = [
        at - int(orjson.loads(frame.split(b" ", 2)[2])["data"]["t"])
        for at, frame in received[:events]
    ]
    return Live(latencies, emit_ns, wall, round(flushes1 - flushes0), round(rows1 - rows0))


async def live_round(bench: Bench, mode: str, args: argparse.Namespace, events: int) -> Live:
    for _ in range(3):
        try:
            return await run_live(bench, mode, events, args.live_pause_ms / 1000, args.live_load)
        except SubscriberLost as e:
            print(f"live {mode}: {e}; running the round again", file=sys.stderr)
    raise SystemExit(f"live {mode}: the subscriber's connection kept being closed")


# -- report ------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


async def machine(bench: Bench) -> dict[str, Any]:
    pg: dict[str, str] = {}
    async with bench.engine.connect() as conn:
        for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers"):
            pg[name] = str((await conn.exec_driver_sql(f"SHOW {name}")).scalar_one())
    server: dict[str, Any] = await bench.redis.info("server")
    return {
        **machine_basics(),
        "psycopg": f"{psycopg.__version__} ({psycopg.pq.__impl__})",
        "sqlalchemy": sqlalchemy.__version__,
        "redis_py": redis.__version__,
        "postgres": pg.pop("server_version").split()[0],
        "pg_settings": pg,
        "pg_local": bench.local_server,
        "redis_version": server.get("redis_version"),
    }


def summarise(samples: list[Sample]) -> dict[str, Any]:
    rates = [s.rate for s in samples]
    server = [1e6 * s.server_cpu_s / s.rows for s in samples]
    out = {
        "rows": samples[0].rows,
        "rates": [round(r) for r in rates],
        "median_rate": round(median(rates)),
        "min_rate": round(min(rates)),
        "max_rate": round(max(rates)),
        "cpu_us_per_row": round(median([1e6 * s.cpu_s / s.rows for s in samples]), 2),
        "server_cpu_us_per_row": None if math.isnan(server[0]) else round(median(server), 2),
        "batch": round(median([s.batch for s in samples])),
    }
    if samples[0].flushes:
        out["flushes"] = round(median([s.flushes for s in samples]))
        out["stall_ms"] = round(median([1e3 * s.stall_s for s in samples]), 1)
    return out


def summarise_live(lives: list[Live]) -> dict[str, Any]:
    def ms(runs: list[list[int]], q: float) -> float:
        return round(median([percentile(r, q) for r in runs]) / 1e6, 3)

    lat = [lv.latencies_ns for lv in lives]
    return {
        "events": len(lat[0]),
        "p50_ms": ms(lat, 0.5),
        "mean_ms": round(median([statistics.fmean(r) for r in lat]) / 1e6, 3),
        "p99_ms": ms(lat, 0.99),
        "max_ms": ms(lat, 1.0),
        "emit_p99_ms": ms([lv.emit_ns for lv in lives], 0.99),
        "events_per_s": round(median([len(lv.latencies_ns) / lv.wall_s for lv in lives])),
        "rows_per_flush": round(median([lv.flush_rows / max(1, lv.flushes) for lv in lives])),
    }


def verdicts(results: dict[str, Any], live: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets: what was measured, and whether it passed."""
    rate = results["writer"]["median_rate"]
    out = [(f"{rate:,} rows/s", f">= {TARGET_RATE:,.0f}", rate >= TARGET_RATE)]
    for mode, least in (("naive", TARGET_VS_NAIVE), ("copy", TARGET_VS_COPY)):
        if mode in results:
            r = rate / results[mode]["median_rate"]
            out.append((f"{r:.2f}x {mode}", f">= {least}x", r >= least))
    if "on" in live and "off" in live:
        on, off = live["on"]["p99_ms"], live["off"]["p99_ms"]
        out.append(
            (
                f"live p99 on/off {on:.3f}/{off:.3f} ms = {on / off:.2f}x, {on - off:+.3f} ms",
                f"<= {TARGET_P99_RATIO}x or <= +{TARGET_P99_EXTRA_MS} ms",
                on / off <= TARGET_P99_RATIO or on - off <= TARGET_P99_EXTRA_MS,
            )
        )
    return [{"measured": m, "target": t, "pass": ok} for m, t, ok in out]


LABELS = {
    "writer": "MessageWriter (8 producers)",
    "naive": "INSERT + commit per row",
    "copy": "COPY, one transaction",
    "copy_b": "COPY, commit per B rows",
    "unnest_text_b": "writer's SQL, text params (%s), per B",
    "unnest_bin_b": "writer's SQL, binary params (%b), per B",
    "copytmp_b": "binary COPY to temp + INSERT…SELECT, per B",
}


def print_report(report: dict[str, Any]) -> None:
    m, p = report["machine"], report["params"]
    print(f"herald journal (PostgreSQL writer) benchmark  {report['date']}")
    settings = ", ".join(f"{k}={v}" for k, v in m["pg_settings"].items())
    print(
        f"machine: {m['nproc']} CPUs, {m['cpu_model']}; Python {m['python']} (asyncio); "
        f"psycopg {m['psycopg']}, SQLAlchemy {m['sqlalchemy']}, redis-py {m['redis_py']}; "
        f"PostgreSQL {m['postgres']} ({settings}{', local' if m['pg_local'] else ''}); "
        f"Redis {m['redis_version']}"
    )
    if m["other_load"] is not None:
        print(f"other load during the rounds: {100 * m['other_load']:.0f} % of the CPUs")
    print(
        f"params: {p['rows']:,} rows per mode (naive: {p['naive_rows']:,}) over {MESSAGES} "
        f"messages, {p['rounds']} rounds, medians; writer MAX_ROWS {p['max_rows']:,}; "
        "B = the writer's mean rows per flush"
    )
    head = f"{'mode':<44} {'B':>5} {'rows/s':>8} {'min':>8} {'max':>8} {'cli µs':>7} {'srv µs':>7}"
    print(f"\n{head}\n{'-' * len(head)}")
    for key, r in report["results"].items():
        srv = r["server_cpu_us_per_row"]
        print(
            f"{LABELS[key]:<44} {r['batch']:>5} {r['median_rate']:>8,} {r['min_rate']:>8,} "
            f"{r['max_rate']:>8,} {r['cpu_us_per_row']:>7.2f} "
            + (f"{srv:>7.2f}" if srv is not None else f"{'-':>7}")
        )
    w = report["results"]["writer"]
    print(
        f"writer: {w['flushes']} flushes of {w['batch']:,} rows (mean) per round; "
        f"longest event-loop stall {w['stall_ms']} ms"
    )
    print("(CPU per row, µs: cli = this process, srv = the PostgreSQL server)")
    if report["live"]:
        print(
            f"\nlive latency, {p['live_events']:,} events per round, {p['live_pause_ms']} ms "
            f"apart; on+load adds {p['live_load']:,} rows/s from another producer"
        )
        head = (
            f"{'writer':<8} {'p50 ms':>7} {'mean ms':>7} {'p99 ms':>7} {'max ms':>7} "
            f"{'emit p99':>9} {'events/s':>8} {'rows/flush':>10}"
        )
        print(f"{head}\n{'-' * len(head)}")
        for key, lv in report["live"].items():
            print(
                f"{key:<8} {lv['p50_ms']:>7.3f} {lv['mean_ms']:>7.3f} {lv['p99_ms']:>7.3f} "
                f"{lv['max_ms']:>7.3f} {lv['emit_p99_ms']:>9.3f} {lv['events_per_s']:>8,} "
                f"{lv['rows_per_flush']:>10,}"
            )
    print()
    for v in report["verdict"]:
        print(f"{'PASS' if v['pass'] else 'FAIL'}  writer: {v['measured']} (target {v['target']})")


# -- driver ------------------------------------------------------------------------------


async def bench_main(args: argparse.Namespace, scratch_url: str) -> dict[str, Any]:
    settings = Settings.load(database_url=scratch_url, redis_url=args.redis_url)
    engine = make_engine(settings)
    client = aioredis.Redis.from_url(args.redis_url)
    local = make_url(scratch_url).host in (None, "", "localhost", "127.0.0.1", "::1") and any(
        p.info["name"] == "postgres" for p in psutil.process_iter(["name"])
    )
    bench = Bench(engine, _conninfo(scratch_url), client, settings, local)
    samples: dict[str, list[Sample]] = {m: [] for m in WRITE_MODES if m in args.modes}
    lives: dict[str, list[Live]] = {m: [] for m in LIVE_MODES if m in args.modes}
    try:
        try:
            info = await machine(bench)
        except (redis.ConnectionError, OSError) as e:
            raise SystemExit(f"cannot reach Redis at {args.redis_url}: {e}") from e
        # Warm-up: opens the pool's connections and runs every code path once.
        ids, rows = make_rows(min(args.rows, 5000))
        for mode in samples:
            await reset(bench, ids)
            await write_round(bench, mode, rows[: args.naive_rows], 500)
        for mode in lives:
            await live_round(bench, mode, args, 100)

        busy0, ours0 = await cpu_used(bench)
        t0 = time.perf_counter()
        for rnd in range(args.rounds):
            ids, rows = make_rows(args.rows)
            gc.collect()
            gc.freeze()  # the bench's own rows are not the writer's garbage
            batch = 5000  # until the writer has run in this round
            for mode in samples:
                await reset(bench, ids)
                part = rows[: args.naive_rows] if mode == "naive" else rows
                s = await write_round(bench, mode, part, batch)
                async with bench.engine.connect() as conn:
                    stored = (await conn.exec_driver_sql(COUNT)).scalar_one()
                if stored != s.rows:
                    raise SystemExit(f"{mode}: {stored} rows stored, expected {s.rows}")
                if mode == "writer":
                    batch = s.batch
                samples[mode].append(s)
            # A different order each round, so no mode always follows the same one.
            turn = rnd % max(1, len(lives))
            for mode in [*list(lives)[turn:], *list(lives)[:turn]]:
                lives[mode].append(await live_round(bench, mode, args, args.live_events))
            del rows
            gc.unfreeze()
            if not args.json:
                rates = ", ".join(f"{k} {v[-1].rate:,.0f}" for k, v in samples.items())
                p99 = ", ".join(
                    f"{k} {percentile(v[-1].latencies_ns, 0.99) / 1e6:.2f}"
                    for k, v in lives.items()
                )
                print(
                    f"round {rnd + 1}/{args.rounds}: rows/s {rates}; live p99 ms {p99}",
                    file=sys.stderr,
                )
        info["other_load"] = None
        if local:
            busy1, ours1 = await cpu_used(bench)
            wall = (time.perf_counter() - t0) * (os.cpu_count() or 1)
            info["other_load"] = round(max(0.0, (busy1 - busy0) - (ours1 - ours0)) / wall, 3)
    finally:
        if bench.keys:
            await client.delete(*bench.keys)
        await client.aclose()
        await engine.dispose()

    results = {m: summarise(v) for m, v in samples.items()}
    live = {m: summarise_live(v) for m, v in lives.items()}
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "params": {
            **{k: v for k, v in vars(args).items() if k not in ("database_url", "json")},
            "messages": MESSAGES,
            "max_rows": writer_module.MAX_ROWS,
        },
        "results": results,
        "live": live,
        "verdict": verdicts(results, live),
    }


def _conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A new, migrated database on ``admin_url``'s server, dropped at the end; yields
    its URL."""
    name = f"herald_bench_journal_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(_conninfo(admin_url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as e:
        raise SystemExit(f"cannot reach PostgreSQL at {admin_url}: {e}") from e
    try:
        scratch = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        migrations.upgrade(scratch)
        yield scratch
    finally:
        with psycopg.connect(_conninfo(admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument(
        "--database-url",
        default=os.environ.get("HERALD_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="a server on which the bench may create and drop a scratch database",
    )
    ap.add_argument(
        "--redis-url", default=os.environ.get("HERALD_BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    )
    ap.add_argument("--rows", type=int, default=100_000, help="rows per write mode")
    ap.add_argument("--naive-rows", type=int, default=1_000, help="rows for the naive mode")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--live-events", type=int, default=1_000, help="events per latency round")
    ap.add_argument("--live-pause-ms", type=float, default=0.5, help="pause between emits")
    ap.add_argument("--live-load", type=int, default=20_000, help="rows/s offered in on+load")
    all_modes = (*WRITE_MODES, *LIVE_MODES)
    ap.add_argument(
        "--modes",
        type=lambda v: [m.strip() for m in v.split(",") if m.strip()],
        default=list(all_modes),
        help=f"comma-separated subset of {','.join(all_modes)} (default: all; writer always runs)",
    )
    ap.add_argument("--json", action="store_true", help="write the figures as JSON to stdout")
    args = ap.parse_args()
    if min(args.rows, args.naive_rows, args.rounds, args.live_events, args.live_load) < 1:
        ap.error("--rows, --naive-rows, --rounds, --live-events and --live-load must be positive")
    if unknown := set(args.modes) - set(all_modes):
        ap.error(f"unknown modes: {', '.join(sorted(unknown))}")
    args.modes = [m for m in all_modes if m in args.modes or m == "writer"]
    args.naive_rows = min(args.naive_rows, args.rows)

    try:
        with scratch_database(args.database_url) as scratch:
            report = asyncio.run(bench_main(args, scratch))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print_report(report)


if __name__ == "__main__":
    main()

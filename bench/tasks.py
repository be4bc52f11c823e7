"""Task throughput and latency through a real ``herald worker``: enqueue → execute →
``completed`` event, for no-op tasks (``herald.noop``).

Run from the repository root (the ``herald`` package must be importable)::

    python bench/tasks.py [--redis-url URL] [--database-url URL] [--n N] [--seq M]
                          [--repeats R] [--concurrency C] [--json]

One ``herald worker`` process (started next to this interpreter, like production)
reads a fresh queue.  The bench process enqueues with ``TaskQueue.enqueue`` and
observes each task's ``herald.noop.completed`` envelope on the owner's stream with
a blocking XREAD on a connection of its own.  Per repeat, on a fresh user:

* ``burst``: N tasks enqueued by 32 concurrent producers; tasks/s is N divided by
  the time from the first enqueue call to the last completed event observed.  The
  latency of each task under that load (enqueue call → its completed event) is
  reported too.
* ``seq``: M tasks one at a time, each enqueued only once the previous one's
  completed event arrived: the latency of an otherwise idle system.

CPU per task is reported for the worker process (all threads, psutil) and for this
bench process.  Figures are medians over the repeats.  All keys live under a random
``bench-<hex>`` prefix and are deleted at the end (never FLUSHALL).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import psutil
import redis
import redis.asyncio as aioredis
from _common import herald_command, machine_basics, percentile, redis_versions

from herald.journal.positions import Target
from herald.journal.redis import RedisJournal
from herald.journal.runtime.settings import Settings
from herald.journal.tasks.keys import dead_key, retry_key, status_key, tasks_key
from herald.journal.tasks.queue import TaskQueue

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
KIND = "herald.noop"
PRODUCERS = 32
WARMUP = 200
DEADLINE_S = 60.0


class BenchError(Exception):
    pass


class WorkerProcess:
    """``herald worker`` on one queue; ready once it prints its "ready" line."""

    def __init__(self, redis_url: str, database_url: str, queue: str, concurrency: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        env.update(
            {
                "HERALD_REDIS_URL": redis_url,
                "HERALD_DATABASE_URL": database_url,
                "HERALD_LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
            }
        )
        args = [herald_command(), "worker", "--queue", queue, "--concurrency", str(concurrency)]
        self.proc = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.log: list[str] = []
        self._ready = threading.Event()
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()
        if not self._ready.wait(30):
            self.stop()
            raise BenchError("herald worker did not start:\n" + "".join(self.log[-20:]))
        self.ps = psutil.Process(self.proc.pid)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)
            if line.startswith("herald: worker") and " ready " in line:
                self._ready.set()

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._pump.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Watcher:
    """Records when each task's completed event is read from the owner's stream."""

    def __init__(self, redis_url: str, user: str) -> None:
        self.client = aioredis.Redis.from_url(redis_url, socket_timeout=None)
        self.key = Target.user(user).stream_key
        self.seen: dict[str, float] = {}
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        last = "0-0"
        completed = f"{KIND}.completed".encode()
        while True:
            reply = await self.client.xread({self.key: last}, block=1000, count=1000)
            now = time.perf_counter()
            for _, rows in reply or []:
                for entry_id, fields in rows:
                    last = entry_id.decode()
                    if fields[b"t"] == completed:
                        self.seen[orjson.loads(fields[b"e"])["data"]["task_id"]] = now
                self.changed.set()

    async def wait_for(self, task_ids: list[str]) -> None:
        async with asyncio.timeout(DEADLINE_S):
            while not all(t in self.seen for t in task_ids):
                self.changed.clear()
                await self.changed.wait()

    async def aclose(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.client.aclose()


@dataclass(slots=True)
class Sample:
    tasks: int
    wall_s: float
    enqueue_s: float
    worker_cpu_s: float
    client_cpu_s: float
    latencies_s: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.tasks / self.wall_s


@dataclass(slots=True)
class Run:
    redis_url: str
    tasks: TaskQueue
    worker: WorkerProcess
    queue: str
    prefix: str
    users: list[str] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)

    def user(self, tag: str) -> str:
        name = f"{self.prefix}-{tag}"
        self.users.append(name)
        return name


async def burst(run: Run, tag: str, n: int) -> Sample:
    user = run.user(tag)
    watcher = Watcher(run.redis_url, user)
    starts: dict[str, float] = {}

    async def producer(count: int) -> None:
        for _ in range(count):
            began = time.perf_counter()
            task_id = await run.tasks.enqueue(KIND, user, {}, queue=run.queue)
            starts[task_id] = began

    try:
        cpu0, wcpu0 = time.process_time(), run.worker.cpu_s()
        t0 = time.perf_counter()
        shares = [n // PRODUCERS + (1 if i < n % PRODUCERS else 0) for i in range(PRODUCERS)]
        await asyncio.gather(*(producer(c) for c in shares if c))
        enqueue_s = time.perf_counter() - t0
        ids = list(starts)
        await watcher.wait_for(ids)
        end = max(watcher.seen[t] for t in ids)
        cpu1, wcpu1 = time.process_time(), run.worker.cpu_s()
    finally:
        await watcher.aclose()
    run.task_ids += starts
    return Sample(
        n,
        end - t0,
        enqueue_s,
        wcpu1 - wcpu0,
        cpu1 - cpu0,
        [watcher.seen[t] - s for t, s in starts.items()],
    )


async def sequential(run: Run, tag: str, m: int) -> Sample:
    user = run.user(tag)
    watcher = Watcher(run.redis_url, user)
    latencies = []
    try:
        cpu0, wcpu0 = time.process_time(), run.worker.cpu_s()
        t0 = time.perf_counter()
        for _ in range(m):
            began = time.perf_counter()
            task_id = await run.tasks.enqueue(KIND, user, {}, queue=run.queue)
            run.task_ids.append(task_id)
            await watcher.wait_for([task_id])
            latencies.append(watcher.seen[task_id] - began)
        wall = time.perf_counter() - t0
        cpu1, wcpu1 = time.process_time(), run.worker.cpu_s()
    finally:
        await watcher.aclose()
    return Sample(m, wall, 0.0, wcpu1 - wcpu0, cpu1 - cpu0, latencies)


def summarise(samples: list[Sample]) -> dict[str, Any]:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    return {
        "tasks_per_s": med([s.rate for s in samples]),
        "tasks_per_s_min": min(s.rate for s in samples),
        "tasks_per_s_max": max(s.rate for s in samples),
        "enqueue_per_s": med([s.tasks / s.enqueue_s for s in samples])
        if samples[0].enqueue_s
        else None,
        "p50_ms": med([percentile(s.latencies_s, 0.5) * 1000 for s in samples]),
        "p99_ms": med([percentile(s.latencies_s, 0.99) * 1000 for s in samples]),
        "worker_cpu_us": med([s.worker_cpu_s / s.tasks * 1e6 for s in samples]),
        "client_cpu_us": med([s.client_cpu_s / s.tasks * 1e6 for s in samples]),
        "repeats": len(samples),
    }


async def cleanup(client: aioredis.Redis, run: Run) -> None:
    keys = [tasks_key(run.queue), retry_key(run.queue), dead_key(run.queue)]
    for user in run.users:
        keys += [Target.user(user).stream_key, Target.user(user).meta_key]
    keys += [status_key(t) for t in run.task_ids]
    for i in range(0, len(keys), 1000):
        await client.delete(*keys[i : i + 1000])


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    client = aioredis.Redis.from_url(args.redis_url)
    try:
        server: dict[str, Any] = await client.info("server")
    except (redis.ConnectionError, OSError) as e:
        await client.aclose()
        raise SystemExit(f"cannot reach Redis at {args.redis_url}: {e}") from e
    settings = Settings(redis_url=args.redis_url, database_url=args.database_url)  # type: ignore[call-arg]
    prefix = f"bench-{secrets.token_hex(4)}"
    worker = WorkerProcess(args.redis_url, args.database_url, f"{prefix}-q", args.concurrency)
    run = Run(
        args.redis_url,
        TaskQueue(client, RedisJournal(client), settings),
        worker,
        f"{prefix}-q",
        prefix,
    )
    bursts: list[Sample] = []
    seqs: list[Sample] = []
    try:
        await burst(run, "warmup", WARMUP)  # loads the scripts, opens the connections
        for rep in range(args.repeats):
            bursts.append(await burst(run, f"b{rep}", args.n))
            seqs.append(await sequential(run, f"s{rep}", args.seq))
            if not args.json:
                print(
                    f"repeat {rep + 1}/{args.repeats}: burst {bursts[-1].rate:,.0f} tasks/s, "
                    f"seq p50 {percentile(seqs[-1].latencies_s, 0.5) * 1000:.2f} ms",
                    file=sys.stderr,
                )
    finally:
        worker.stop()
        await cleanup(client, run)
        await client.aclose()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            **machine_basics(),
            **redis_versions(server),
            "redis_url": args.redis_url,
        },
        "params": {
            "n": args.n,
            "seq": args.seq,
            "repeats": args.repeats,
            "concurrency": args.concurrency,
            "producers": PRODUCERS,
        },
        "results": {"burst": summarise(bursts), "seq": summarise(seqs)},
    }


def print_table(report: dict[str, Any]) -> None:
    m, p, r = report["machine"], report["params"], report["results"]
    print(f"herald task benchmark  {report['date']}")
    print(
        f"machine: {m['nproc']} CPUs, {m['cpu_model']}; Python {m['python']}; "
        f"redis-py {m['redis_py']} (hiredis {m['hiredis']}); Redis {m['redis_version']} "
        f"at {m['redis_url']}"
    )
    print(
        f"one herald worker, concurrency {p['concurrency']}; burst of {p['n']:,} tasks from "
        f"{p['producers']} producers; {p['seq']} sequential tasks; "
        f"medians of {p['repeats']} repeats"
    )
    print()
    print("| mode | tasks/s (min-max) | p50 ms | p99 ms | worker CPU µs | bench CPU µs |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, label in (("burst", f"burst of {p['n']:,}"), ("seq", "one at a time")):
        x = r[name]
        print(
            f"| {label} | {x['tasks_per_s']:,.0f} ({x['tasks_per_s_min']:,.0f}-"
            f"{x['tasks_per_s_max']:,.0f}) | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} | "
            f"{x['worker_cpu_us']:.0f} | {x['client_cpu_us']:.0f} |"
        )
    if r["burst"]["enqueue_per_s"]:
        print(f"\nenqueue alone (burst): {r['burst']['enqueue_per_s']:,.0f} tasks/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--redis-url", default=os.environ.get("HERALD_BENCH_REDIS_URL", DEFAULT_REDIS))
    ap.add_argument(
        "--database-url",
        default=os.environ.get("HERALD_BENCH_DATABASE_URL", DEFAULT_DB),
        help="only for the worker's settings: no-op tasks never touch the database",
    )
    ap.add_argument("--n", type=int, default=2000, help="tasks per burst")
    ap.add_argument("--seq", type=int, default=300, help="tasks run one at a time per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=4, help="the worker's concurrency")
    ap.add_argument("--json", action="store_true", help="write the figures as JSON to stdout")
    args = ap.parse_args()
    if min(args.n, args.seq, args.repeats, args.concurrency) < 1:
        ap.error("--n, --seq, --repeats and --concurrency must be positive")
    try:
        report = asyncio.run(bench(args))
    except BenchError as e:
        raise SystemExit(str(e)) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print_table(report)


if __name__ == "__main__":
    main()

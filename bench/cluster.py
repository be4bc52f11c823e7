"""Herald on a 3-shard Redis Cluster against one Redis: publish throughput, live
fan-out deliveries/s, and the Redis connections one process holds.

Run from the repository root (needs ``redis-server`` >= 7 and ``redis-cli``)::

    python bench/cluster.py [--publishes N] [--events E] [--users U] [--fanout F] [--json]

It starts its own servers on free loopback ports and stops them at the end: a local
cluster of 3 primaries + 3 replicas (``tests/rediscluster.py``) and one plain
``redis-server``, both without persistence.  Each side is driven by the same code
and settings, built the way ``herald serve`` builds them (``make_redis`` and the
hub's connection factory; ``HERALD_REDIS_CLUSTER`` is the only difference):

* publish: ``RedisJournal.publish`` from 64 concurrent tasks, N envelopes spread over
  U user streams (so over every shard); envelopes/s.
* publish_many: the same envelopes in batches of 100 (one pipeline per batch, split
  by node on the cluster); envelopes/s.
* fan-out: one hub, F subscribers per user channel (U x F subscriptions, each a
  task draining its queue as an SSE connection does); E envelopes published in
  batches; deliveries/s from the first publish to the last delivery.
* connections: TCP connections from this process to the servers after the fan-out
  (command client + hub).  Bounds: one Redis, ``HERALD_REDIS_MAX_CONNECTIONS`` + 1;
  the cluster, 3 + primaries (the command client holds one connection per primary,
  shared by every command in flight and by the hub's sharded pub/sub).

On one small machine every server and the client share the same cores, so the
cluster cannot be faster here; the ratios measure what cluster mode costs per
operation (slot routing, one reader per primary).  PASS: cluster/one-Redis ratios
>= 0.5 for every rate, and the connection bounds hold.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import machine_basics  # noqa: E402

from herald.api.state import hub_connection_factory, hub_ping_s  # noqa: E402
from herald.journal.base import JournalLimits, PublishRequest  # noqa: E402
from herald.journal.positions import Target  # noqa: E402
from herald.journal.redis import RedisJournal  # noqa: E402
from herald.journal.runtime.clients import make_redis  # noqa: E402
from herald.journal.runtime.settings import Settings  # noqa: E402
from herald.streams.hub import LiveMessage  # noqa: E402
from herald.streams.hub_redis import RedisHub  # noqa: E402
from tests.rediscluster import LocalCluster, unavailable  # noqa: E402

MIN_RATIO = 0.5
CONCURRENCY = 64
BATCH = 100
LIMITS = JournalLimits(stream_maxlen=100_000)


@contextlib.contextmanager
def one_redis() -> Iterator[int]:
    """A plain ``redis-server`` on a free loopback port, no persistence."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    folder = tempfile.mkdtemp(prefix="herald-bench-redis-")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", folder],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            ping = subprocess.run(
                ["redis-cli", "-p", str(port), "PING"], capture_output=True, text=True
            )
            if ping.stdout.strip() == "PONG":
                break
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)  # polling a starting process, with a deadline
        yield port
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


def connections_to(ports: set[int]) -> int:
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port in ports and c.status == psutil.CONN_ESTABLISHED
    )


async def bench_publish(journal: RedisJournal, users: list[str], n: int) -> float:
    targets = [Target.user(u) for u in users]
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await journal.publish(targets[i % len(targets)], "bench.n", {"n": i})

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return n / (time.perf_counter() - began)


async def bench_publish_many(journal: RedisJournal, users: list[str], n: int) -> float:
    targets = [Target.user(u) for u in users]
    began = time.perf_counter()
    for start in range(0, n, BATCH):
        await journal.publish_many(
            [
                PublishRequest(targets[i % len(targets)], "bench.n", {"n": i})
                for i in range(start, min(n, start + BATCH))
            ]
        )
    return n / (time.perf_counter() - began)


async def bench_fanout(
    hub: RedisHub, journal: RedisJournal, users: list[str], fanout: int, events: int
) -> float:
    targets = [Target.user(u) for u in users]
    expected = events * fanout
    delivered = 0
    all_in = asyncio.Event()

    async def subscriber(channel: str, ready: asyncio.Event, stop: asyncio.Event) -> None:
        nonlocal delivered
        async with hub.subscribe([channel], 10_000) as sub:
            ready.set()
            while not stop.is_set():
                items = await sub.take()
                delivered += sum(1 for x in items if isinstance(x, LiveMessage))
                if delivered >= expected:
                    all_in.set()

    stop = asyncio.Event()
    readies = []
    tasks = []
    for t in targets:
        for _ in range(fanout):
            ready = asyncio.Event()
            readies.append(ready)
            tasks.append(asyncio.create_task(subscriber(t.channel, ready, stop)))
    await asyncio.gather(*(r.wait() for r in readies))
    began = time.perf_counter()
    for start in range(0, events, BATCH):
        await journal.publish_many(
            [
                PublishRequest(targets[i % len(targets)], "bench.n", {"n": i})
                for i in range(start, min(events, start + BATCH))
            ]
        )
    async with asyncio.timeout(120):
        await all_in.wait()
    rate = expected / (time.perf_counter() - began)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return rate


async def run_side(
    name: str, settings: Settings, ports: set[int], args: argparse.Namespace
) -> dict[str, Any]:
    client = make_redis(settings)
    journal = RedisJournal(client, LIMITS)
    hub = RedisHub(hub_connection_factory(settings, client), ping_interval_s=hub_ping_s(settings))
    await hub.start()
    users = [f"bench-{name}-{i}" for i in range(args.users)]
    try:
        await journal.publish(Target.user(users[0]), "bench.warmup", {})  # load scripts
        out: dict[str, Any] = {
            "publish_per_s": await bench_publish(journal, users, args.publishes),
            "publish_many_per_s": await bench_publish_many(journal, users, args.publishes),
            "fanout_deliveries_per_s": await bench_fanout(
                hub, journal, users, args.fanout, args.events
            ),
            "connections": connections_to(ports),
        }
    finally:
        await hub.aclose()
        await client.aclose()
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    base = {"database_url": "postgresql://unused/unused"}
    report: dict[str, Any] = {"machine": machine_basics(), "params": vars(args).copy()}
    with one_redis() as port:
        single = Settings(redis_url=f"redis://127.0.0.1:{port}", **base)  # type: ignore[arg-type]
        report["one_redis"] = await run_side("one", single, {port}, args)
        report["max_connections"] = single.redis_max_connections
    cluster = LocalCluster().start()
    try:
        settings = Settings(  # type: ignore[call-arg]
            redis_url=cluster.url,
            redis_cluster=True,
            redis_cluster_nodes=cluster.nodes[1:],
            **base,
        )
        report["cluster"] = await run_side("cluster", settings, set(cluster.ports), args)
        report["primaries"] = len(cluster.pairs())
    finally:
        cluster.stop()
    return report


def verdicts(report: dict[str, Any]) -> list[str]:
    one, clu = report["one_redis"], report["cluster"]
    lines = []
    for key in ("publish_per_s", "publish_many_per_s", "fanout_deliveries_per_s"):
        ratio = clu[key] / one[key]
        ok = "PASS" if ratio >= MIN_RATIO else "FAIL"
        lines.append(
            f"{ok} {key}: cluster {clu[key]:,.0f} vs one Redis {one[key]:,.0f} "
            f"(ratio {ratio:.2f}, needs >= {MIN_RATIO})"
        )
    bound = 3 + report["primaries"]
    ok = "PASS" if clu["connections"] <= bound else "FAIL"
    lines.append(
        f"{ok} cluster connections per process: {clu['connections']} (bound 3 + "
        f"{report['primaries']} primaries = {bound}; commands and sharded pub/sub "
        f"share one connection per primary)"
    )
    bound = report["max_connections"] + 1
    ok = "PASS" if one["connections"] <= bound else "FAIL"
    lines.append(f"{ok} one-Redis connections per process: {one['connections']} (bound {bound})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--publishes", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--fanout", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    reason = unavailable()
    if reason is not None:
        raise SystemExit(f"bench/cluster.py: {reason}")
    report = asyncio.run(main_async(args))
    lines = verdicts(report)
    report["verdicts"] = lines
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"machine: {report['machine']}")
        print(f"params: {report['params']}")
        for side in ("one_redis", "cluster"):
            print(f"{side}: " + ", ".join(f"{k} {v:,.0f}" for k, v in report[side].items()))
        print("\n".join(lines))
    if any(line.startswith("FAIL") for line in lines):
        raise SystemExit(1)


if __name__ == "__main__":
    main()

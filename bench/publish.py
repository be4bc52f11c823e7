"""Publish throughput of ``RedisJournal`` against a raw redis-py baseline, from one process.

Run from the repository root (the ``herald`` package must be importable)::

    python bench/publish.py [--redis-url URL] [--n N] [--batch B] [--repeats R] [--json]

Modes, each repeated R times on fresh stream names, interleaved so that drift (other
load on the machine, Redis memory) hits every mode alike:

* ``publish`` sequential: one awaited call at a time; latency-bound, so per-call
  p50/p99 are reported too.
* ``publish`` with 64 concurrent tasks (one connection each, from the pool).
  Both per-call modes publish ``--calls`` envelopes round-robin over 8 user streams.
* ``publish_many`` in batches of B over N envelopes, spread round-robin over 8 user
  streams (so grouping by stream matters), and a single-stream variant.
* raw: redis-py pipeline of ``XADD key MAXLEN ~ <maxlen> * e <json>`` plus
  ``PUBLISH channel <json>`` per event, the JSON being a CloudEvents-like dict built
  and orjson-serialised per event; same payload, batch size and stream layout.  It
  journals AND publishes each event, so the server does comparable work; it lacks
  only what Herald adds (atomicity, id splicing, previous-id chaining, metadata).

Besides wall-clock rates, every mode reports per envelope the bench process's CPU,
the Redis time spent in the mode's commands (``INFO commandstats`` deltas) and the
Redis main thread's CPU (``INFO cpu``, which adds protocol parsing and socket I/O),
so one can tell client-side cost from server-side cost.  The Redis figures assume
nobody else is busy on the same server.  All keys live under a random ``bench-<hex>``
prefix and are deleted at the end (never FLUSHALL).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis
from _common import (
    delete_keys,
    delete_prefix,
    machine_basics,
    percentile,
    redis_versions,
)

from herald.journal.base import JournalLimits, PublishRequest
from herald.journal.positions import Target
from herald.journal.redis import RedisJournal

DEFAULT_URL = "redis://127.0.0.1:6379/0"
EVENT_TYPE = "source.ingest.progress"
SOURCE = "/herald"
MAXLEN = 10000
USERS = 8
CONCURRENCY = 64
# The targets for publish_many.
TARGET_RATE = 50_000.0
TARGET_RATIO = 0.5

# Server-side commands whose time is the mode's work.  Commands run from Lua are
# also counted under their own names, and EVALSHA's time already includes them,
# so summing every command would count Herald's XADD/PUBLISH twice.
HERALD_CMDS = ("evalsha",)
RAW_CMDS = ("xadd", "publish")


@dataclass(frozen=True, slots=True)
class Mode:
    key: str  # short, used in stream names and JSON
    label: str
    kind: str  # "seq" | "conc" | "many" | "raw"
    streams: int
    server_cmds: tuple[str, ...]


@dataclass(slots=True)
class Sample:
    envelopes: int
    wall_s: float
    cpu_s: float  # this process's CPU time (all threads) during the mode
    server_usec: float  # Redis command time for the mode's commands
    server_cpu_s: float  # Redis main-thread CPU: commands plus reading requests, replying
    latencies_s: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.envelopes / self.wall_s


@dataclass(slots=True)
class Run:
    """Per-run state: the key prefix and every key created, so all can be deleted."""

    client: aioredis.Redis
    journal: RedisJournal
    prefix: str
    batch: int
    keys: set[str] = field(default_factory=set)

    def targets(self, tag: str, count: int) -> list[Target]:
        out = [Target.user(f"{self.prefix}-{tag}-u{i}") for i in range(count)]
        for t in out:
            self.keys.update((t.stream_key, t.meta_key))
        return out

    def raw_streams(self, tag: str, count: int) -> list[tuple[str, str, str]]:
        """(stream key, channel, subject) per stream; hash-tagged like Herald's keys."""
        out = []
        for i in range(count):
            name = f"{self.prefix}-{tag}-u{i}"
            key = f"bench:{{{name}}}:stream"
            self.keys.add(key)
            out.append((key, f"bench:{{{name}}}", f"user:{name}"))
        return out


def _data(i: int, n: int) -> dict[str, Any]:
    # Same payload in every mode: a typical progress event.
    return {"current": i, "total": n}


async def run_seq(run: Run, tag: str, mode: Mode, n: int) -> Sample:
    targets = run.targets(tag, mode.streams)
    lat: list[float] = []
    publish = run.journal.publish
    clock = time.perf_counter
    t0, c0 = clock(), time.process_time()
    for i in range(n):
        s = clock()
        await publish(targets[i % len(targets)], EVENT_TYPE, _data(i, n))
        lat.append(clock() - s)
    return Sample(n, clock() - t0, time.process_time() - c0, 0.0, 0.0, lat)


async def run_conc(run: Run, tag: str, mode: Mode, n: int) -> Sample:
    targets = run.targets(tag, mode.streams)
    publish = run.journal.publish

    async def worker(w: int) -> None:
        for i in range(w, n, CONCURRENCY):
            await publish(targets[i % len(targets)], EVENT_TYPE, _data(i, n))

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
    return Sample(n, time.perf_counter() - t0, time.process_time() - c0, 0.0, 0.0)


async def run_many(run: Run, tag: str, mode: Mode, n: int) -> Sample:
    targets = run.targets(tag, mode.streams)
    k = len(targets)
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, n, run.batch):
        # Requests are built inside the timed loop, as a caller would.
        batch = [
            PublishRequest(targets[i % k], EVENT_TYPE, _data(i, n))
            for i in range(start, min(start + run.batch, n))
        ]
        await run.journal.publish_many(batch)
    return Sample(n, time.perf_counter() - t0, time.process_time() - c0, 0.0, 0.0)


async def run_raw(run: Run, tag: str, mode: Mode, n: int) -> Sample:
    streams = run.raw_streams(tag, mode.streams)
    k = len(streams)
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, n, run.batch):
        async with run.client.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + run.batch, n)):
                key, channel, subject = streams[i % k]
                payload = orjson.dumps(
                    {
                        "specversion": "1.0",
                        "id": f"{tag}-{i}",
                        "source": SOURCE,
                        "type": EVENT_TYPE,
                        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                        "subject": subject,
                        "datacontenttype": "application/json",
                        "data": _data(i, n),
                    }
                )
                pipe.xadd(key, {"e": payload}, maxlen=MAXLEN, approximate=True)
                pipe.publish(channel, payload)
            await pipe.execute()
    return Sample(n, time.perf_counter() - t0, time.process_time() - c0, 0.0, 0.0)


RUNNERS: dict[str, Callable[[Run, str, Mode, int], Awaitable[Sample]]] = {
    "seq": run_seq,
    "conc": run_conc,
    "many": run_many,
    "raw": run_raw,
}

MODES = (
    Mode("seq", "publish, sequential", "seq", USERS, HERALD_CMDS),
    Mode("conc", f"publish, {CONCURRENCY} concurrent tasks", "conc", USERS, HERALD_CMDS),
    Mode("many8", f"publish_many, {USERS} streams", "many", USERS, HERALD_CMDS),
    Mode("many1", "publish_many, 1 stream", "many", 1, HERALD_CMDS),
    Mode("raw8", f"raw XADD+PUBLISH pipeline, {USERS} streams", "raw", USERS, RAW_CMDS),
    Mode("raw1", "raw XADD+PUBLISH pipeline, 1 stream", "raw", 1, RAW_CMDS),
)


async def command_usec(client: aioredis.Redis) -> dict[str, float]:
    stats: dict[str, Any] = await client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): float(v["usec"])
        for name, v in stats.items()
        if isinstance(v, dict) and "usec" in v
    }


async def server_cpu(client: aioredis.Redis) -> float:
    cpu: dict[str, Any] = await client.info("cpu")
    return float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])


async def measure(run: Run, tag: str, mode: Mode, n: int) -> Sample:
    before, cpu_before = await command_usec(run.client), await server_cpu(run.client)
    sample = await RUNNERS[mode.kind](run, tag, mode, n)
    after, cpu_after = await command_usec(run.client), await server_cpu(run.client)
    # Other clients of a shared Redis add a little noise here; good enough to split
    # client from server time.
    sample.server_usec = sum(after.get(c, 0.0) - before.get(c, 0.0) for c in mode.server_cmds)
    sample.server_cpu_s = cpu_after - cpu_before
    return sample


def summarise(mode: Mode, samples: list[Sample]) -> dict[str, Any]:
    rates = [s.rate for s in samples]
    out: dict[str, Any] = {
        "label": mode.label,
        "streams": mode.streams,
        "envelopes_per_repeat": samples[0].envelopes,
        "rates": [round(r, 1) for r in rates],
        "median_rate": round(statistics.median(rates), 1),
        "min_rate": round(min(rates), 1),
        "max_rate": round(max(rates), 1),
        "wall_us_per_env": round(statistics.median(1e6 / r for r in rates), 2),
        "client_cpu_us_per_env": round(
            statistics.median(1e6 * s.cpu_s / s.envelopes for s in samples), 2
        ),
        "server_us_per_env": round(
            statistics.median(s.server_usec / s.envelopes for s in samples), 2
        ),
        "server_cpu_us_per_env": round(
            statistics.median(1e6 * s.server_cpu_s / s.envelopes for s in samples), 2
        ),
    }
    if samples[0].latencies_s:
        out["p50_ms"] = round(
            statistics.median(percentile(s.latencies_s, 0.5) for s in samples) * 1e3, 3
        )
        out["p99_ms"] = round(
            statistics.median(percentile(s.latencies_s, 0.99) for s in samples) * 1e3, 3
        )
    return out


def verdicts(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for streams in (USERS, 1):
        if f"many{streams}" not in results or f"raw{streams}" not in results:
            continue  # --modes left one side out
        many = results[f"many{streams}"]["median_rate"]
        raw = results[f"raw{streams}"]["median_rate"]
        ratio = many / raw
        out[f"{streams}_streams"] = {
            "publish_many": many,
            "raw": raw,
            "ratio": round(ratio, 3),
            "rate_target": TARGET_RATE,
            "rate_pass": many >= TARGET_RATE,
            "ratio_target": TARGET_RATIO,
            "ratio_pass": ratio >= TARGET_RATIO,
        }
    return out


def print_table(report: dict[str, Any]) -> None:
    m, p = report["machine"], report["params"]
    print(f"herald publish benchmark  {report['date']}")
    print(
        f"machine: {m['nproc']} CPUs, {m['cpu_model']}; Python {m['python']} "
        f"({m['event_loop']}); redis-py {m['redis_py']} (hiredis: {m['hiredis']}); "
        f"Redis {m['redis_version']} at {m['redis_url']}"
    )
    print(
        f"params: n={p['n']} (publish modes: {p['calls']}), batch={p['batch']}, "
        f"repeats={p['repeats']}, maxlen={p['maxlen']}; medians over repeats"
    )
    print()
    head = (
        f"{'mode':<40} {'env/s':>9} {'min':>9} {'max':>9} "
        f"{'wall µs':>8} {'cli CPU':>8} {'srv cmd':>8} {'srv CPU':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in report["results"].values():
        print(
            f"{r['label']:<40} {r['median_rate']:>9,.0f} {r['min_rate']:>9,.0f} "
            f"{r['max_rate']:>9,.0f} {r['wall_us_per_env']:>8.2f} "
            f"{r['client_cpu_us_per_env']:>8.2f} {r['server_us_per_env']:>8.2f} "
            f"{r['server_cpu_us_per_env']:>8.2f}"
        )
    print()
    if seq := report["results"].get("seq"):
        print(f"sequential publish latency: p50 {seq['p50_ms']:.3f} ms, p99 {seq['p99_ms']:.3f} ms")
    print(
        "(µs per envelope: wall clock; this process's CPU; Redis time in the mode's commands "
        "(EVALSHA, or XADD+PUBLISH); Redis main-thread CPU incl. protocol and network)"
    )
    print()
    for streams, v in report["verdict"].items():
        rate = "PASS" if v["rate_pass"] else "FAIL"
        ratio = "PASS" if v["ratio_pass"] else "FAIL"
        layout = "1 stream" if streams == "1_streams" else streams.replace("_", " ")
        print(
            f"{layout}: publish_many {v['publish_many']:,.0f} env/s "
            f"[{rate} >= {v['rate_target']:,.0f}]; "
            f"publish_many/raw = {v['ratio']:.2f} [{ratio} >= {v['ratio_target']}]"
        )


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    client = aioredis.Redis.from_url(args.redis_url)
    try:
        server: dict[str, Any] = await client.info("server")
    except (redis.ConnectionError, OSError) as e:
        await client.aclose()
        raise SystemExit(f"cannot reach Redis at {args.redis_url}: {e}") from e
    run = Run(
        client,
        RedisJournal(client, JournalLimits(stream_maxlen=MAXLEN)),
        f"bench-{secrets.token_hex(4)}",
        args.batch,
    )
    modes = [m for m in MODES if m.key in args.modes]
    samples: dict[str, list[Sample]] = {m.key: [] for m in modes}
    try:
        # Warm-up: loads the Lua script, opens the pool's connections for the
        # concurrent mode and runs every code path once before anything is timed.
        for mode in modes:
            small = max(CONCURRENCY, min(args.calls, args.n, 1000))
            await RUNNERS[mode.kind](run, f"w-{mode.key}", mode, small)
        # The timed runs must not pay for NOSCRIPT + SCRIPT LOAD.
        if not (await client.script_exists(run.journal._script.sha))[0]:
            raise SystemExit("warm-up did not load the publish script")
        await delete_keys(client, run.keys)
        run.keys.clear()

        for rep in range(args.repeats):
            for mode in modes:
                n = args.calls if mode.kind in ("seq", "conc") else args.n
                samples[mode.key].append(await measure(run, f"r{rep}-{mode.key}", mode, n))
            # Drop this repeat's streams so Redis's memory does not grow across repeats.
            await delete_keys(client, run.keys)
            run.keys.clear()
            if not args.json:
                rates = ", ".join(f"{k} {v[-1].rate:,.0f}" for k, v in samples.items())
                print(f"repeat {rep + 1}/{args.repeats}: {rates}", file=sys.stderr)
    finally:
        await delete_keys(client, run.keys)
        await delete_prefix(client, run.prefix)
        await client.aclose()

    results = {m.key: summarise(m, samples[m.key]) for m in modes}
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            **machine_basics(),
            "event_loop": "uvloop" if args.uvloop else "asyncio",
            **redis_versions(server),
            "redis_url": args.redis_url,
        },
        "params": {
            "n": args.n,
            "calls": args.calls,
            "batch": args.batch,
            "repeats": args.repeats,
            "maxlen": MAXLEN,
            "users": USERS,
            "concurrency": CONCURRENCY,
            "modes": [m.key for m in modes],
        },
        "results": results,
        "verdict": verdicts(results),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--redis-url", default=os.environ.get("HERALD_BENCH_REDIS_URL", DEFAULT_URL))
    ap.add_argument("--n", type=int, default=50_000, help="envelopes per batched mode")
    ap.add_argument(
        "--calls",
        type=int,
        default=5_000,
        help="envelopes for the per-call publish modes (they are ~10x slower, and the run "
        "must stay short)",
    )
    ap.add_argument("--batch", type=int, default=500, help="envelopes per publish_many")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--modes",
        type=lambda v: [m.strip() for m in v.split(",") if m.strip()],
        default=[m.key for m in MODES],
        help=f"comma-separated subset of {','.join(m.key for m in MODES)} (default: all)",
    )
    ap.add_argument("--uvloop", action="store_true", help="run on uvloop (as uvicorn does)")
    ap.add_argument("--json", action="store_true", help="write the figures as JSON to stdout")
    args = ap.parse_args()
    if min(args.n, args.calls, args.batch, args.repeats) < 1:
        ap.error("--n, --calls, --batch and --repeats must be positive")
    if unknown := set(args.modes) - {m.key for m in MODES}:
        ap.error(f"unknown modes: {', '.join(sorted(unknown))}")

    try:
        if args.uvloop:
            import uvloop  # optional: only installed with uvicorn[standard]

            report = uvloop.run(bench(args))
        else:
            report = asyncio.run(bench(args))
    except KeyboardInterrupt:
        # The bench's finally block has already deleted its keys by now.
        raise SystemExit(130) from None
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print_table(report)


if __name__ == "__main__":
    main()

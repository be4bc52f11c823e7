"""Replay throughput of one real ``herald serve``: an SSE resume drain and history paging.

Run from the repository root with the project installed (``pip install -e .``)::

    python bench/replay.py [--backlog N] [--repeats R] [--modes sse,history] [--json]

One ``herald serve`` process is started for the whole run (uvicorn as in production,
``HERALD_LOG_LEVEL=WARNING``) against the Redis and PostgreSQL named by
``--redis-url`` / ``--database-url``.  In every repeat a fresh user gets a backlog:
one marker event, whose id is the cursor, then N events with ``data.n`` = 0..N-1,
written with the Python journal's ``publish_many``.  Then, on that backlog:

* ``sse``: one client sends ``GET /api/events`` with ``Last-Event-ID: <marker id>`` and
  reads until it has all N events.  Timed from the request being written to the last
  event being parsed.
* ``history``: ``GET /api/events/history?after=<cursor>&limit=1000`` on one keep-alive
  connection, following ``next_cursor`` until a page comes back empty.

Both verify that every event arrived, in order (``data.n``), with no ``herald.gap``, and
that the final cursor points at the newest entry.  The clients are meant to cost little
next to the server: the SSE client is a raw asyncio socket that de-chunks and scans
whole buffers with one regex (C speed) instead of parsing each frame in Python.  The
bench process's CPU, the server process's CPU and the Redis main thread's CPU are
reported per event, so the bottleneck shows.

The server gets a very high replay budget (the default, 30 replays a minute, would
refuse paging through a large backlog) and a replay cap of at least the backlog, so
no ``backlog_limit`` gap cuts the drain short.  Every Redis key the run creates
contains a random ``bench-<hex>`` user-name prefix and is deleted at the end, also
after Ctrl-C; the database is never flushed, because it is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import jwt
import orjson
import psutil
import redis
import redis.asyncio as aioredis
from _common import delete_keys, delete_prefix, herald_command, machine_basics, redis_versions

from herald.journal.base import JournalLimits, PublishRequest
from herald.journal.positions import StreamId, Target
from herald.journal.redis import RedisJournal

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
EVENT_TYPE = "bench.replay.item"
PUBLISH_BATCH = 1000
HISTORY_LIMIT = 1000  # the API's largest page
WARMUP_EVENTS = 1000
MODES = ("sse", "history")
# The target: an SSE resume drains its backlog at this rate or faster.
TARGET_RATE = 100_000.0

# A frame's data line, capturing data.n.  The envelope's "data" member is serialised
# last, so the greedy ".*" lands on it, and one findall over a whole buffer replaces
# a Python loop per frame.
_DATA_N = re.compile(rb'^data: \{.*"data":\{"n":(\d+)[,}]', re.MULTILINE)
_READ_SIZE = 1 << 20


class BenchError(Exception):
    """The run cannot go on: the server refused something or a drain was incomplete."""


# -- the server ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HeraldServer:
    """One ``herald serve`` subprocess; ready when it prints its ``herald: ready`` line."""

    def __init__(self, redis_url: str, database_url: str, extra_env: dict[str, str]) -> None:
        self.command = herald_command()
        self.port = _free_port()
        self.secret = secrets.token_hex(32)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        self.env.update(
            {
                "HERALD_REDIS_URL": redis_url,
                "HERALD_DATABASE_URL": database_url,
                "HERALD_JWT_SECRET": self.secret,
                # Request logging would be server CPU that is not replay.
                "HERALD_LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
                **extra_env,
            }
        )
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []
        self._ready = threading.Event()
        # The server writes nothing into its working folder when both URLs are set;
        # a scratch folder makes sure the repository stays untouched anyway.
        self._workdir = tempfile.TemporaryDirectory(prefix="herald-bench-")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 60.0) -> None:
        done = subprocess.run(
            [self.command, "migrate"], env=self.env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise BenchError(f"herald migrate failed:\n{done.stderr.strip()}")
        self.proc = subprocess.Popen(
            [self.command, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=self._workdir.name,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()
        if not self._ready.wait(timeout_s):
            self.stop()
            raise BenchError("herald serve did not start:\n" + "".join(self.log[-40:]))

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        # Keeps reading so a chatty server never blocks on a full pipe.
        assert proc.stdout is not None
        for line in proc.stdout:
            self.log.append(line)
            if line.startswith("herald: ready"):
                self._ready.set()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._workdir.cleanup()

    def token(self, user: str, ttl_s: int = 3600) -> str:
        # Signed here with the server's secret, as `herald token` would: one CLI
        # process per user would cost a second each.
        now = int(time.time())
        claims = {"sub": user, "roles": [], "iat": now, "exp": now + ttl_s}
        return str(jwt.encode(claims, self.secret, algorithm="HS256"))


def process_cpu_s(pid: int) -> float:
    """CPU time of every thread of ``pid`` in seconds, user + system.

    ``/proc/<pid>/task/*/schedstat`` counts nanoseconds; psutil's ``cpu_times`` counts
    clock ticks (10 ms), which is a tenth of a 100 ms drain.  psutil is the fallback
    where schedstat is missing.
    """
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        total_ns = 0
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as f:
                    total_ns += int(f.read().split()[0])
            except FileNotFoundError:
                continue  # a thread that ended meanwhile
        return total_ns / 1e9
    except (OSError, ValueError, IndexError):
        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)


async def redis_cpu_s(client: aioredis.Redis) -> float:
    cpu: dict[str, Any] = await client.info("cpu")
    return float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])


# -- a minimal HTTP/1.1 client ---------------------------------------------------


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


def request_bytes(port: int, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    """A whole response body: Content-Length or chunked."""
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        dechunk, out = Dechunker(), bytearray()
        while not dechunk.finished:
            data = await reader.read(_READ_SIZE)
            if not data:
                raise BenchError("connection closed inside a chunked body")
            out += dechunk.feed(data)
        return bytes(out)
    return await reader.read()


class Dechunker:
    """Incremental ``Transfer-Encoding: chunked`` decoder.

    uvicorn writes each ASGI body message as one chunk, and Herald sends one message
    per replay page (~1,000 frames), so chunks are large and this loop runs a few
    times per page, not per event.
    """

    def __init__(self) -> None:
        self._raw = bytearray()
        self._left = 0  # payload bytes still due in the current chunk
        self._crlf = 0  # bytes of the CRLF after a chunk's payload still to skip
        self.finished = False

    def feed(self, data: bytes) -> bytes:
        raw = self._raw
        raw += data
        out = bytearray()
        pos = 0
        while pos < len(raw) and not self.finished:
            if self._left:
                take = min(self._left, len(raw) - pos)
                out += raw[pos : pos + take]
                pos += take
                self._left -= take
                if not self._left:
                    self._crlf = 2
            elif self._crlf:
                skip = min(self._crlf, len(raw) - pos)
                pos += skip
                self._crlf -= skip
            else:
                eol = raw.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(bytes(raw[pos:eol]).split(b";", 1)[0], 16)
                pos = eol + 2
                if size == 0:
                    self.finished = True
                self._left = size
        del raw[:pos]
        return bytes(out)


# -- backlog and measurements --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backlog:
    target: Target
    user: str
    cursor: str  # the marker event's id: the plain "<ms>-<seq>" cursor form
    first_n: int
    count: int
    last_id: StreamId


@dataclass(slots=True)
class Sample:
    events: int
    wall_s: float
    first_event_s: float  # request written -> first event parsed
    client_cpu_s: float
    server_cpu_s: float
    redis_cpu_s: float
    requests: int = 1

    @property
    def rate(self) -> float:
        return self.events / self.wall_s


@dataclass(slots=True)
class Run:
    client: aioredis.Redis
    journal: RedisJournal
    server: HeraldServer
    prefix: str


async def publish_backlog(run: Run, user: str, count: int) -> Backlog:
    target = Target.user(user)
    marker = await run.journal.publish(target, "bench.replay.marker", {})
    last = marker.id
    for start in range(0, count, PUBLISH_BATCH):
        batch = [
            PublishRequest(target, EVENT_TYPE, {"n": n, "total": count})
            for n in range(start, min(start + PUBLISH_BATCH, count))
        ]
        last = (await run.journal.publish_many(batch))[-1].id
    return Backlog(target, user, str(marker.id), 0, count, last)


def check_delivery(backlog: Backlog, ns: list[int], frames: int, final_cursor: str) -> None:
    """The drain is real: every event, in order, no gap frame, cursor at the newest."""
    want = list(range(backlog.first_n, backlog.first_n + backlog.count))
    if ns != want:
        bad = next((i for i, (a, b) in enumerate(zip(ns, want, strict=False)) if a != b), None)
        raise BenchError(
            f"got {len(ns)} events, expected {len(want)}; first mismatch at index {bad}"
        )
    if frames != backlog.count:
        raise BenchError(f"{frames - backlog.count} frames without data.n (herald.gap?)")
    if not final_cursor.endswith(f"~{backlog.last_id}"):
        raise BenchError(f"final cursor {final_cursor!r} does not end at {backlog.last_id}")


async def sse_drain(run: Run, backlog: Backlog, token: str) -> Sample:
    port = run.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=_READ_SIZE)
    request = request_bytes(
        port,
        "/api/events",
        {
            "Authorization": f"Bearer {token}",
            "Accept": "text/event-stream",
            "Last-Event-ID": backlog.cursor,
        },
    )
    try:
        redis0 = await redis_cpu_s(run.client)
        server0 = process_cpu_s(run.server.pid)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        writer.write(request)
        status, headers = await read_head(reader)
        if status != 200:
            body = await read_body(reader, headers)
            raise BenchError(f"GET /api/events: HTTP {status}: {body[:300]!r}")
        dechunk = Dechunker() if headers.get("transfer-encoding") == "chunked" else None
        pending = bytearray()
        found: list[bytes] = []
        frames = 0
        first_at = 0.0
        last_frame = b""
        while frames < backlog.count:
            data = await reader.read(_READ_SIZE)
            if not data:
                raise BenchError(f"stream ended after {frames} of {backlog.count} events")
            pending += dechunk.feed(data) if dechunk is not None else data
            end = pending.rfind(b"\n\n")
            if end < 0:
                continue
            # Only whole frames are scanned; a partial one waits for the next read.
            region = bytes(pending[: end + 2])
            del pending[: end + 2]
            # Every frame is "id: <cursor>\ndata: <json>\n\n".
            got = region.count(b"\ndata: ")
            if got:
                if not frames:
                    first_at = time.perf_counter()
                frames += got
                found += _DATA_N.findall(region)
                last_frame = region[region.rfind(b"id: ", 0, end) :]
        t1 = time.perf_counter()
        cpu1 = time.process_time()
        server1 = process_cpu_s(run.server.pid)
        redis1 = await redis_cpu_s(run.client)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    final_cursor = last_frame.split(b"\n", 1)[0].removeprefix(b"id: ").decode()
    check_delivery(backlog, [int(n) for n in found], frames, final_cursor)
    return Sample(
        backlog.count,
        t1 - t0,
        first_at - t0,
        cpu1 - cpu0,
        server1 - server0,
        redis1 - redis0,
    )


async def history_drain(run: Run, backlog: Backlog, token: str) -> Sample:
    port = run.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=_READ_SIZE)
    auth = {"Authorization": f"Bearer {token}"}
    after = backlog.cursor
    ns: list[int] = []
    frames = requests = 0
    first_at = 0.0
    try:
        redis0 = await redis_cpu_s(run.client)
        server0 = process_cpu_s(run.server.pid)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        while True:
            path = f"/api/events/history?after={quote(after, safe='')}&limit={HISTORY_LIMIT}"
            writer.write(request_bytes(port, path, auth))
            status, headers = await read_head(reader)
            body = await read_body(reader, headers)
            requests += 1
            if status != 200:
                raise BenchError(f"GET /api/events/history: HTTP {status}: {body[:300]!r}")
            page = orjson.loads(body)
            events = page["events"]
            if not events:
                break
            if not first_at:
                first_at = time.perf_counter()
            if page["gaps"]:
                raise BenchError(f"history reported gaps: {page['gaps']}")
            frames += len(events)
            ns += [e["data"]["n"] for e in events]
            after = page["next_cursor"]
        t1 = time.perf_counter()
        cpu1 = time.process_time()
        server1 = process_cpu_s(run.server.pid)
        redis1 = await redis_cpu_s(run.client)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    check_delivery(backlog, ns, frames, after)
    return Sample(
        backlog.count,
        t1 - t0,
        first_at - t0,
        cpu1 - cpu0,
        server1 - server0,
        redis1 - redis0,
        requests,
    )


DRAINS = {"sse": sse_drain, "history": history_drain}
LABELS = {
    "sse": "SSE resume drain (GET /api/events)",
    "history": f"history pages (limit={HISTORY_LIMIT})",
}


def raise_if_cancelled() -> None:
    """Stop at a Ctrl-C that redis-py swallowed.

    A cancellation that lands inside a redis-py pipeline is sometimes lost (seen with
    redis-py 8.1), yet the task still counts it; without this check the run would go
    on and print figures from the repeats done so far."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def delete_user_keys(client: aioredis.Redis, user: str) -> None:
    # Every key Herald keeps for a user carries its hash tag: stream, metadata,
    # connection leases, replay budget.
    found = [k async for k in client.scan_iter(match=f"herald:{{u:{user}}}:*", count=1000)]
    await delete_keys(client, found)


# -- report -------------------------------------------------------------------


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def summarise(mode: str, samples: list[Sample]) -> dict[str, Any]:
    rates = [s.rate for s in samples]

    def med_us(values: list[float]) -> float:
        return round(statistics.median(values), 2)

    return {
        "label": LABELS[mode],
        "events_per_repeat": samples[0].events,
        "rates": [round(r, 1) for r in rates],
        "median_rate": round(statistics.median(rates), 1),
        "min_rate": round(min(rates), 1),
        "max_rate": round(max(rates), 1),
        "wall_ms": round(statistics.median(s.wall_s for s in samples) * 1e3, 2),
        "first_event_ms": round(statistics.median(s.first_event_s for s in samples) * 1e3, 2),
        "first_event_ms_each": [round(s.first_event_s * 1e3, 2) for s in samples],
        "requests": samples[0].requests,
        "client_cpu_us_per_event": med_us([1e6 * s.client_cpu_s / s.events for s in samples]),
        "server_cpu_us_per_event": med_us([1e6 * s.server_cpu_s / s.events for s in samples]),
        "redis_cpu_us_per_event": med_us([1e6 * s.redis_cpu_s / s.events for s in samples]),
        # Near 100 %: the server's one event-loop thread is the bottleneck.
        "server_busy_pct": round(
            statistics.median(100 * s.server_cpu_s / s.wall_s for s in samples), 1
        ),
    }


def print_table(report: dict[str, Any]) -> None:
    m, p = report["machine"], report["params"]
    print(f"herald replay benchmark  {report['date']}")
    print(
        f"machine: {m['nproc']} CPUs, {m['cpu_model']}; Python {m['python']}; "
        f"uvicorn {m['uvicorn']} (uvloop {m['uvloop']}, httptools {m['httptools']}); "
        f"sse-starlette {m['sse_starlette']}; redis-py {m['redis_py']} "
        f"(hiredis: {m['hiredis']}); Redis {m['redis_version']}"
    )
    print(
        f"params: backlog={p['backlog']}, repeats={p['repeats']}, "
        f"replay_page={p['replay_page']}, client loop={p['client_loop']}; medians over repeats"
    )
    print()
    head = (
        f"{'mode':<36} {'events/s':>9} {'min':>9} {'max':>9} {'wall ms':>8} {'1st ms':>7} "
        f"{'reqs':>5} {'cli µs':>7} {'srv µs':>7} {'redis µs':>8} {'srv busy':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in report["results"].values():
        print(
            f"{r['label']:<36} {r['median_rate']:>9,.0f} {r['min_rate']:>9,.0f} "
            f"{r['max_rate']:>9,.0f} {r['wall_ms']:>8.1f} {r['first_event_ms']:>7.1f} "
            f"{r['requests']:>5} {r['client_cpu_us_per_event']:>7.2f} "
            f"{r['server_cpu_us_per_event']:>7.2f} {r['redis_cpu_us_per_event']:>8.2f} "
            f"{r['server_busy_pct']:>7.0f}%"
        )
    print()
    print(
        "(CPU columns are µs per event: this bench process; the herald serve process, all "
        "threads; the Redis main thread. srv busy = server CPU / wall time)"
    )
    print()
    if v := report["verdict"]:
        verdict = "PASS" if v["pass"] else "FAIL"
        print(
            f"SSE replay drain of {p['backlog']:,} events: {v['sse_rate']:,.0f} events/s "
            f"[{verdict} >= {v['target']:,.0f}]"
        )


# -- main ---------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    client = aioredis.Redis.from_url(args.redis_url)
    try:
        server_info: dict[str, Any] = await client.info("server")
    except (redis.ConnectionError, OSError) as e:
        await client.aclose()
        raise SystemExit(f"cannot reach Redis at {args.redis_url}: {e}") from e
    prefix = f"bench-{secrets.token_hex(4)}"
    extra_env = {
        # Paging through history charges the budget once per page; the default (30
        # a minute) would refuse a large backlog.
        "HERALD_REPLAY_BUDGET": "1000000",
        # The default cap (100,000) would end a larger drain with a backlog_limit gap.
        "HERALD_MAX_REPLAY_EVENTS": str(max(100_000, args.backlog)),
    }
    if args.replay_page is not None:
        extra_env["HERALD_REPLAY_PAGE"] = str(args.replay_page)
    server = HeraldServer(args.redis_url, args.database_url, extra_env)
    # Room for the whole backlog: approximate trimming must not eat into it.
    journal = RedisJournal(client, JournalLimits(stream_maxlen=max(args.backlog * 2, 1000)))
    run = Run(client, journal, server, prefix)
    samples: dict[str, list[Sample]] = {m: [] for m in args.modes}
    try:
        server.start()
        # Warm-up: first requests import lazily, open the server's Redis pool and
        # subscribe its hub; none of that is replay.
        backlog = await publish_backlog(run, f"{prefix}-warm", WARMUP_EVENTS)
        token = server.token(backlog.user)
        for mode in args.modes:
            await DRAINS[mode](run, backlog, token)
        await delete_user_keys(client, backlog.user)
        raise_if_cancelled()

        for rep in range(args.repeats):
            # A fresh user per repeat: its own connection cap and replay budget.
            backlog = await publish_backlog(run, f"{prefix}-r{rep}", args.backlog)
            token = server.token(backlog.user)
            for mode in args.modes:
                raise_if_cancelled()
                samples[mode].append(await DRAINS[mode](run, backlog, token))
            await delete_user_keys(client, backlog.user)
            raise_if_cancelled()
            if not args.json:
                rates = ", ".join(f"{m} {v[-1].rate:,.0f}/s" for m, v in samples.items())
                print(f"repeat {rep + 1}/{args.repeats}: {rates}", file=sys.stderr)
    except BenchError as e:
        # A drain that ends early is usually explained by the server's own output.
        tail = "".join(server.log[-30:]).rstrip() or "(nothing)"
        raise BenchError(f"{e}\nlast lines of herald serve's output:\n{tail}") from None
    finally:
        server.stop()
        # After the stop: a closing connection's lease bookkeeping may still write.
        await delete_prefix(client, prefix)
        await client.aclose()

    results = {m: summarise(m, samples[m]) for m in args.modes}
    verdict: dict[str, Any] = {}
    if "sse" in results:
        rate = results["sse"]["median_rate"]
        verdict = {"sse_rate": rate, "target": TARGET_RATE, "pass": rate >= TARGET_RATE}
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            **machine_basics(),
            "uvicorn": _version("uvicorn"),
            "uvloop": _version("uvloop"),
            "httptools": _version("httptools"),
            "sse_starlette": _version("sse-starlette"),
            **redis_versions(server_info),
        },
        "params": {
            "backlog": args.backlog,
            "repeats": args.repeats,
            "modes": list(args.modes),
            "replay_page": args.replay_page or "server default",
            "history_limit": HISTORY_LIMIT,
            "client_loop": "uvloop" if args.uvloop else "asyncio",
        },
        "results": results,
        "verdict": verdict,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument(
        "--redis-url", default=os.environ.get("HERALD_BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    )
    ap.add_argument(
        "--database-url",
        default=os.environ.get("HERALD_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="PostgreSQL the server needs to start (it is migrated, not written to)",
    )
    ap.add_argument("--backlog", type=int, default=10_000, help="events replayed per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--modes",
        type=lambda v: tuple(m.strip() for m in v.split(",") if m.strip()),
        default=MODES,
        help=f"comma-separated subset of {','.join(MODES)} (default: both)",
    )
    ap.add_argument(
        "--replay-page",
        type=int,
        default=None,
        help="HERALD_REPLAY_PAGE for the server (default: the server's own default)",
    )
    ap.add_argument("--uvloop", action="store_true", help="run the bench client on uvloop")
    ap.add_argument("--json", action="store_true", help="write the figures as JSON to stdout")
    args = ap.parse_args()
    if min(args.backlog, args.repeats) < 1:
        ap.error("--backlog and --repeats must be positive")
    if unknown := set(args.modes) - set(MODES):
        ap.error(f"unknown modes: {', '.join(sorted(unknown))}")

    try:
        if args.uvloop:
            import uvloop  # installed with uvicorn[standard]

            report = uvloop.run(bench(args))
        else:
            report = asyncio.run(bench(args))
    except BenchError as e:
        raise SystemExit(f"replay bench: {e}") from None
    except KeyboardInterrupt:
        # bench()'s finally block has stopped the server and deleted the keys.
        raise SystemExit(130) from None
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print_table(report)


if __name__ == "__main__":
    main()

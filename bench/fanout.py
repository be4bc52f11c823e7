"""SSE fan-out: Herald's ``GET /api/events`` against Nchan (nginx + Redis), same client, same run.

Run from the repository root with the project installed (``pip install -e .``)::

    python bench/fanout.py                                  # both servers, table on stdout
    python bench/fanout.py --servers nchan --clients 1000   # one server, one size
    python bench/fanout.py --json > fanout.json

For every case and server, a fresh server process is started (so each has a clean memory
baseline), then:

1. one warm-up subscriber connects, so one-off costs of a channel's first subscriber (Redis
   SUBSCRIBE, lazy imports, buffers) are not charged to the measured connections;
2. the server's RSS (process and children: nginx master + its one worker) is sampled, N
   idle subscribers connect in paced batches, the server is given ``--settle`` s and then
   as long as it needs to go quiet (under 10 % of a core: Herald subscribes each stream
   and reads its position after sending the response head, so a subscriber that has
   its head may not be subscribed yet), and RSS is sampled again:
   ``(after - before) / N`` is the RSS per idle connection;
3. Redis connections held by the server are counted: its established TCP sockets whose
   peer is the Redis port (psutil), after the idle ramp and again after the load;
4. one publisher process starts, imports and connects; once it says it is ready and the
   server is quiet again, it sends ``--rate`` events/s for ``--duration`` s to the one channel;
   every subscriber counts what it receives and the publish-to-receive latency from the
   publisher's ``time.time_ns()`` carried in the payload.  Delivered events/s is all
   events received by all subscribers, divided by the time from the first publish to the
   last event received (at least the publishing window, so a server that falls behind is
   not credited for late deliveries); completeness is received / (subscribers x
   published).  The CPU used by the server, this client, the publisher, Redis and
   everything else on the machine is reported too: on 2 shared cores that says who the
   bottleneck was and how noisy the run was.

A final "max" case (``--sat-clients`` subscribers, publisher as fast as it can for
``--sat-seconds`` with ``--sat-concurrency`` publishes in flight) compares delivered
events/s at saturation.

The publisher runs in its own process so that its pacing and timestamps are not delayed by
the subscriber loop, which is the busiest thing on a 2-core machine.  Nchan is fed through
its publisher location.  Herald is fed, by default, through its Python journal
(``RedisJournal.publish``, what Herald's own producers do) in the paced cases and through
``POST /api/publish`` in the max case, so that, as with Nchan, the publish rate is bounded
by what the server under test sustains (``--herald-publish`` overrides both).

Both servers use ``--redis-url`` (default: the shared Redis at 127.0.0.1:6379), or with
``--own-redis`` a private redis-server started for the run: use that when others use the
shared one, since their load and fault-injection tests (CLIENT KILL) disturb the figures.
Every Redis key the run creates contains a random ``bench-<hex>`` tag (Herald topics and
users, Nchan's key namespace) and is deleted at the end, also after Ctrl-C or SIGTERM;
the database is never flushed because it is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import grp
import http.client
import importlib.metadata
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import psutil
import redis
from _sseload import (
    LoadSnapshot,
    SseLoad,
    describe_errors,
    loop_factory,
    percentile,
    raise_nofile,
)

SELF = Path(__file__).resolve()
HERE = SELF.parent
TEMPLATE = HERE / "nchan" / "nginx.conf.template"
HOST = "127.0.0.1"
# Where Debian/Ubuntu, RHEL-likes and nginx.org packages put the dynamic module.
NCHAN_MODULE_PATHS = (
    "/usr/lib/nginx/modules/ngx_nchan_module.so",
    "/usr/lib64/nginx/modules/ngx_nchan_module.so",
    "/usr/share/nginx/modules/ngx_nchan_module.so",
    "/etc/nginx/modules/ngx_nchan_module.so",
)
NOFILE = 65536
# Targets for Herald (issue 16: the delivery engine), each against Nchan in the same run.
TARGET_REDIS_CONNS = 4  # per process
QUIET_PCT = 10.0  # % of a core under which a server counts as done with a ramp
TARGET_RSS_KIB = 12.0  # per idle connection, at TARGET_RSS_AT connections
TARGET_RSS_AT = 10000
TARGET_BIG = (10000, 10.0, 2.0)  # clients, ev/s, most p99 as a multiple of Nchan's
TARGET_SMALL = (1000, 10.0, 1.5)
TARGET_SAT_RATIO = 0.5  # saturation deliveries/s, one process, as a fraction of Nchan's
TARGET_SCALE = (2, 1.7)  # processes, least saturation deliveries/s over one process's
TARGET_IDLE = (30000, 1.0, 2.0)  # idle connections on one process, ev/s, p99 x Nchan's
# File descriptors one side keeps for itself beyond its subscribers (Redis, logs, ...).
FD_MARGIN = 512


class BenchError(Exception):
    """A case could not be measured (server did not start, subscribers could not connect…)."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Servers under test


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def http_status(port: int, path: str, timeout_s: float = 1.0) -> int | None:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class PrivateRedis:
    """A throwaway redis-server on a free loopback port, for ``--own-redis``.

    A shared Redis makes the figures hostage to its other users: their load, and their
    fault-injection tests (``CLIENT KILL TYPE pubsub`` drops both servers' subscriptions
    mid-run).  No persistence: nothing it holds outlives the run.
    """

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self, ready_timeout_s: float = 15.0) -> None:
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="fanout-redis-"))
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.workdir / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, start_new_session=True)
        deadline = time.monotonic() + ready_timeout_s
        client = redis.Redis.from_url(self.url, socket_timeout=1.0)
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise BenchError(f"redis-server exited with status {self.proc.returncode}")
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                time.sleep(0.1)
        finally:
            client.close()
        self.stop()
        raise BenchError(f"redis-server not ready within {ready_timeout_s:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


class Server(ABC):
    """A server process started fresh per case; subclasses say how to run and talk to it."""

    name: str

    def __init__(self, channel: str, processes: int = 1) -> None:
        self.channel = channel
        self.processes_wanted = processes
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self.log_path: Path | None = None

    @abstractmethod
    def command(self) -> tuple[list[str], dict[str, str] | None]:
        """argv and environment (None: inherit) for the server process."""

    @abstractmethod
    def subscribe_request(self, who: str) -> bytes:
        """The raw HTTP/1.1 request one subscriber sends; ``who`` tells subscribers apart."""

    @abstractmethod
    def publisher_spec(self) -> dict[str, Any]:
        """How the publisher process reaches this server's channel."""

    @abstractmethod
    def prepare(self, workdir: Path) -> None:
        """Write whatever the process needs into ``workdir`` before it starts."""

    def start(self, ready_timeout_s: float = 30.0) -> None:
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"fanout-{self.name}-"))
        self.prepare(self.workdir)
        self.log_path = self.workdir / "server.log"
        argv, env = self.command()
        with self.log_path.open("wb") as out:
            # A session of its own: Ctrl-C in the terminal reaches only the bench, which
            # then stops the server in order instead of racing it.
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with status {self.proc.returncode}:\n{self.logs()}"
                )
            if http_status(self.port, "/healthz") == 200:
                return
            time.sleep(0.1)
        raise BenchError(f"{self.name} not ready within {ready_timeout_s:.0f} s:\n{self.logs()}")

    def logs(self) -> str:
        return tail(self.log_path) if self.log_path else "(no log)"

    def stop(self, keep: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if self.workdir is not None:
            if keep:
                log(f"{self.name} logs kept in {self.workdir}")
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def processes(self) -> list[psutil.Process]:
        if self.proc is None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


class NchanServer(Server):
    name = "nchan"

    def __init__(
        self,
        channel: str,
        *,
        nginx: str,
        module: str,
        redis_url: str,
        namespace: str,
        processes: int = 1,
    ) -> None:
        super().__init__(channel, processes)
        self.nginx = nginx
        self.module = module
        self.redis_url = redis_url
        self.namespace = namespace
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.nofile = soft

    def prepare(self, workdir: Path) -> None:
        user = ""
        if os.geteuid() == 0:
            # nginx started as root drops its worker to an unprivileged user; name one that
            # exists here (Debian: nogroup, elsewhere: nobody).  The worker must be able to
            # enter the prefix, where nginx creates its temp dirs for that user.
            group = "nogroup"
            try:
                grp.getgrnam(group)
            except KeyError:
                group = "nobody"
            user = f"user nobody {group};"
            workdir.chmod(0o755)
        text = TEMPLATE.read_text()
        values = {
            "NCHAN_MODULE": self.module,
            "WORKERS": str(self.processes_wanted),
            # What this process could get (and nginx inherits): a worker that is no longer
            # root cannot raise it further, and asking for more only logs an alert.
            "NOFILE": str(self.nofile),
            "USER_DIRECTIVE": user,
            "PREFIX": str(workdir),
            # Every subscriber is one connection; leave room for Redis links and log files.
            "WORKER_CONNECTIONS": str(max(1024, self.nofile - 256)),
            "REDIS_URL": self.redis_url,
            "NAMESPACE": self.namespace,
            "PORT": str(self.port),
        }
        for key, value in values.items():
            text = text.replace(f"@@{key}@@", value)
        if "@@" in text:
            raise BenchError("nginx.conf.template has a placeholder the launcher does not fill")
        (workdir / "nginx.conf").write_text(text)

    def command(self) -> tuple[list[str], dict[str, str] | None]:
        assert self.workdir is not None
        conf = str(self.workdir / "nginx.conf")
        return [self.nginx, "-p", str(self.workdir), "-c", conf, "-g", "daemon off;"], None

    def logs(self) -> str:
        # nginx writes its own error log into the prefix; stdout is mostly empty.
        if self.workdir is None:
            return "(no log)"
        return tail(self.workdir / "error.log") + "\n" + super().logs()

    def subscribe_request(self, who: str) -> bytes:
        # Nchan's eventsource subscriber answers 403 unless the client asks for an event
        # stream, exactly as a browser EventSource does.
        return (
            f"GET /sub/{self.channel} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        ).encode()

    def publisher_spec(self) -> dict[str, Any]:
        return {
            "kind": "nchan",
            "port": self.port,
            "path": f"/pub/{self.channel}",
            "topic": self.channel,
        }


@dataclass
class HeraldSetup:
    """What every Herald case shares: the environment, the command and a token minter."""

    command: str
    env: dict[str, str]
    secret: str
    claims: dict[str, Any]  # claims of a token made by `herald token`, to re-sign per user
    admin_token: str
    redis_url: str
    prefix: str

    @classmethod
    def create(
        cls, command: str, redis_url: str, database_url: str, topics: list[str], prefix: str
    ) -> HeraldSetup:
        import jwt  # only Herald runs need PyJWT

        secret = secrets.token_hex(32)
        env = dict(os.environ)
        env.update(
            {
                "HERALD_REDIS_URL": redis_url,
                "HERALD_DATABASE_URL": database_url,
                "HERALD_JWT_SECRET": secret,
                "HERALD_TOPICS": json.dumps({t: ["*"] for t in topics}),
                # Request logs for 10,000 connects would cost Herald CPU Nchan does not
                # spend (its access log is off).
                "HERALD_LOG_LEVEL": "WARNING",
                # The API process as deployed (Procfile `web`): tasks run in `worker`.
                "HERALD_WORKER_IN_PROCESS": "false",
                # The idle case holds more streams than the default process cap.
                "HERALD_MAX_CONNECTIONS": "100000",
            }
        )

        def run(*argv: str) -> str:
            done = subprocess.run(
                [command, *argv], env=env, capture_output=True, text=True, timeout=120
            )
            if done.returncode != 0:
                raise BenchError(f"herald {' '.join(argv)} failed:\n{done.stderr.strip()}")
            return done.stdout.strip()

        run("migrate")
        template = run("token", "--user", f"{prefix}-tmpl", "--ttl", "7200").split()[-1]
        admin = run("token", "--user", f"{prefix}-pub", "--role", "admin", "--ttl", "7200")
        claims = jwt.decode(template, secret, algorithms=["HS256"])
        return cls(command, env, secret, claims, admin.split()[-1], redis_url, prefix)

    def token(self, user: str) -> str:
        """A token for ``user`` like the CLI's, signed here: 10,000 CLI calls would take
        minutes.  Each subscriber is its own user, since Herald caps connections per user."""
        import jwt

        return str(jwt.encode({**self.claims, "sub": user}, self.secret, algorithm="HS256"))


class HeraldServer(Server):
    name = "herald"

    def __init__(
        self, channel: str, setup: HeraldSetup, publish_via: str, processes: int = 1
    ) -> None:
        super().__init__(channel, processes)
        self.setup = setup
        self.publish_via = publish_via  # "journal" or "http"

    def prepare(self, workdir: Path) -> None:
        """Nothing to write: Herald is configured through its environment."""

    def command(self) -> tuple[list[str], dict[str, str] | None]:
        argv = [self.setup.command, "serve", "--host", HOST, "--port", str(self.port)]
        if self.processes_wanted > 1:
            argv += ["--workers", str(self.processes_wanted)]
        return argv, self.setup.env

    def subscribe_request(self, who: str) -> bytes:
        token = self.setup.token(f"{self.setup.prefix}-{who}")
        return (
            f"GET /api/events?topic={self.channel} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            f"Accept: text/event-stream\r\nCache-Control: no-cache\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()

    def publisher_spec(self) -> dict[str, Any]:
        if self.publish_via == "http":
            return {
                "kind": "herald-http",
                "port": self.port,
                "path": "/api/publish",
                "token": self.setup.admin_token,
                "topic": self.channel,
            }
        return {"kind": "herald-journal", "redis_url": self.setup.redis_url, "topic": self.channel}


# --------------------------------------------------------------------------------------
# Publisher (a child process: ``fanout.py --publisher '<json spec>'``)


def envelope(phase: int, seq: int, subject: str) -> dict[str, Any]:
    """What Nchan subscribers receive: the CloudEvents shape Herald sends, same size class."""
    now = time.time_ns()
    return {
        "specversion": "1.0",
        "id": f"{phase}-{seq}",
        "source": "/bench",
        "type": "bench.tick",
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "subject": subject,
        "datacontenttype": "application/json",
        "data": {"p": phase, "seq": seq, "t": now},
    }


class PublishRefused(Exception):
    """The server answered a publish with an error status."""


class HttpPoster:
    """Minimal keep-alive HTTP/1.1 POST client for the publisher (no extra dependency)."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{self.extra}\r\n"
        )
        try:
            self.writer.write(head.encode() + body)
            raw = await self.reader.readuntil(b"\r\n\r\n")
            lines = raw.split(b"\r\n")
            status = int(lines[0].split(b" ", 2)[1])
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await self.reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            await self.close()
            raise
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def publisher_main(spec: dict[str, Any]) -> dict[str, Any]:
    rate: float = spec["rate"]
    duration: float = spec["duration"]
    phase: int = spec["phase"]
    max_events: int = spec["max_events"]
    concurrency: int = spec["concurrency"] if rate <= 0 else 1
    kind: str = spec["kind"]
    topic: str = spec["topic"]
    subject = f"topic:{topic}"

    senders: list[Callable[[int], Any]] = []
    closers: list[Callable[[], Any]] = []
    if kind == "herald-journal":
        import redis.asyncio as aioredis

        from herald.journal.base import JournalLimits
        from herald.journal.positions import Target
        from herald.journal.redis import RedisJournal

        client = aioredis.Redis.from_url(spec["redis_url"])
        journal = RedisJournal(client, JournalLimits())
        target = Target.topic(spec["topic"])

        async def journal_send(seq: int) -> bool:
            await journal.publish(
                target, "bench.tick", {"p": phase, "seq": seq, "t": time.time_ns()}
            )
            return True

        senders = [journal_send] * concurrency
        closers.append(client.aclose)
    else:
        for _ in range(concurrency):
            headers = {"Authorization": f"Bearer {spec['token']}"} if "token" in spec else {}
            poster = HttpPoster(spec["port"], headers)

            async def http_send(seq: int, poster: HttpPoster = poster) -> bool:
                if kind == "nchan":
                    body = orjson.dumps(envelope(phase, seq, subject))
                else:
                    data = {"p": phase, "seq": seq, "t": time.time_ns()}
                    body = orjson.dumps({"topic": topic, "type": "bench.tick", "data": data})
                status = await poster.post(spec["path"], body)
                # Nchan: 201 when subscribers got it, 202 when queued; Herald: 201.
                if status not in (200, 201, 202):
                    raise PublishRefused(f"HTTP {status}")
                return True

            senders.append(http_send)
            closers.append(poster.close)

    # Ready: the clock starts when the bench says so, once this process's own start-up
    # (imports, connections) no longer takes CPU from the server and the subscribers.
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    published = 0
    errors = 0
    first_error = ""
    next_seq = 0
    start_ns = time.time_ns()  # wall clock: the subscribers' receive times are on it too
    start = time.monotonic()
    end = start + duration
    hard_end = end + 10.0  # a stuck server must not hold the run

    async def send(sender: Callable[[int], Any], seq: int) -> None:
        nonlocal published, errors, first_error
        try:
            async with asyncio.timeout(max(0.1, hard_end - time.monotonic())):
                ok = await sender(seq)
        except Exception as e:  # any failure is counted, the run goes on
            ok = False
            first_error = first_error or f"{type(e).__name__}: {e or 'no detail'}"
        if ok:
            published += 1
        else:
            errors += 1

    if rate > 0:
        count = min(max_events, round(rate * duration))
        for seq in range(count):
            delay = start + seq / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.monotonic() >= hard_end:
                break
            await send(senders[0], seq)
        # The window is the schedule's unless the publisher fell behind it.
        seconds = max(count / rate, time.monotonic() - start)
    else:

        async def worker(sender: Callable[[int], Any]) -> None:
            nonlocal next_seq
            while time.monotonic() < end and next_seq < max_events:
                # Take a number before awaiting so no two publishes share one.  Concurrent
                # publishes may still reach the server out of order; subscribers allow that.
                seq = next_seq
                next_seq += 1
                await send(sender, seq)

        await asyncio.gather(*(worker(s) for s in senders))
        seconds = time.monotonic() - start
    for close in closers:
        with contextlib.suppress(Exception):
            await close()
    return {
        "published": published,
        "errors": errors,
        "seconds": seconds,
        "start_ns": start_ns,
        "first_error": first_error,
    }


@dataclass
class PublishReport:
    published: int
    errors: int
    seconds: float
    start_ns: int
    first_error: str


async def run_publisher(
    spec: dict[str, Any], timeout_s: float, before_start: Callable[[int], Awaitable[None]]
) -> PublishReport:
    """Run the publisher process: once it is ready (imported, connected), await
    ``before_start(its pid)`` and then let it publish, so its start-up is not measured: a
    Python process's first second of imports competes with the server and the
    subscribers for the machine's cores (on 2 vCPUs it made the first of ten
    fan-outs to 19,488 idle streams take twice as long as the others)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SELF),
        "--publisher",
        json.dumps(spec),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # Herald's journal is imported from the repository root, where the bench is run.
        cwd=os.getcwd(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        async with asyncio.timeout(timeout_s):
            while line := await proc.stdout.readline():
                if line == b"ready\n":
                    await before_start(proc.pid)
                    proc.stdin.write(b"go\n")
                    await proc.stdin.drain()
                    break
            out, err = await proc.communicate()
    except TimeoutError as e:
        proc.kill()
        await proc.wait()
        raise BenchError(f"publisher did not finish within {timeout_s:.0f} s") from e
    except BaseException:
        # Interrupted: the publisher must not outlive the run.
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    if proc.returncode != 0:
        raise BenchError(f"publisher failed ({proc.returncode}):\n{err.decode()[-2000:]}")
    return PublishReport(**json.loads(out.decode().strip().splitlines()[-1]))


# --------------------------------------------------------------------------------------
# Measurements


def rss_bytes(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


async def wait_quiet(
    procs: list[psutil.Process], busy_pct: float = QUIET_PCT, deadline_s: float = 60.0
) -> float:
    """Wait until the server uses less than ``busy_pct`` of a core over a quarter
    second (it has finished opening the streams it answered: Herald subscribes and
    reads each stream's position after sending the response head), at most
    ``deadline_s``; returns the seconds waited."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < deadline_s:
        before, t0 = cpu_seconds(procs), loop.time()
        await asyncio.sleep(0.25)
        if 100 * (cpu_seconds(procs) - before) / (loop.time() - t0) < busy_pct:
            break
    return loop.time() - start


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def redis_connections(procs: list[psutil.Process], redis_port: int) -> int:
    """Established TCP connections from the server's processes to the Redis port."""
    count = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            for c in p.net_connections(kind="tcp"):
                if c.raddr and c.raddr.port == redis_port and c.status == psutil.CONN_ESTABLISHED:
                    count += 1
    return count


@dataclass
class CaseResult:
    server: str
    case: str  # "fanout" (idle + stated load), "max" (publisher as fast as possible) or
    # "idle" (the many-connections case: TARGET_IDLE, at a slow rate)
    clients: int
    rate: float  # requested events/s; 0 = as fast as possible
    duration_s: float
    processes: int = 1  # server processes (Herald --workers, nginx worker_processes)
    wanted_clients: int = 0  # the clients asked for, if the file limit allowed fewer
    publisher: str = ""  # how events were fed: nchan, herald-journal or herald-http
    connected: int = 0
    connect_s: float = 0.0
    quiet_s: float = 0.0  # waited after the ramp (and --settle) for the server to go quiet
    connect_errors: dict[str, int] = field(default_factory=dict)
    redis_conns_idle: int = 0
    redis_conns_load: int = 0
    rss_before_mib: float = 0.0
    rss_after_mib: float = 0.0
    rss_per_conn_kib: float | None = None
    published: int = 0
    publish_errors: int = 0
    publish_s: float = 0.0
    received: int = 0
    delivery_s: float = 0.0  # first publish to last event received (at least publish_s)
    delivered_per_s: float = 0.0
    completeness: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    lost_connections: int = 0
    starved: int = 0  # open subscribers that got no event at all (subscribed too late?)
    min_events: int = 0  # fewest events one open subscriber got
    duplicates: int = 0
    stray: int = 0
    unparsed: int = 0
    # CPU during the load phase, in % of one core (the machine has nproc x 100 %).
    server_cpu_pct: float = 0.0
    client_cpu_pct: float = 0.0
    publisher_cpu_pct: float = 0.0
    redis_cpu_pct: float = 0.0  # the whole Redis server, which others may share
    other_cpu_pct: float = 0.0  # everything else on the machine: noise in the figures
    error: str = ""  # the case could not be measured
    error_note: str = ""  # measured, but something went wrong on the way (kept logs)

    @property
    def redis_conns(self) -> int:
        return max(self.redis_conns_idle, self.redis_conns_load)

    @property
    def redis_conns_per_process(self) -> float:
        return self.redis_conns / max(1, self.processes)


async def warm_up(load: SseLoad, deadline_s: float = 20.0) -> None:
    """Connect the warm-up subscriber, retrying while the server answers 503: Nchan is
    listening (its health check passes) before its Redis link is up, and says so."""
    deadline = time.monotonic() + deadline_s
    while True:
        report = await load.connect(1, timeout_s=max(1.0, deadline - time.monotonic()))
        if report.connected == 1:
            return
        if "HTTP 503" not in report.errors or time.monotonic() >= deadline:
            raise BenchError(f"warm-up subscriber failed: {describe_errors(report.errors)}")
        await asyncio.sleep(0.2)


def _redis_cpu_s(client: redis.Redis) -> float:
    try:
        info = client.info("cpu")
    except redis.RedisError:
        return 0.0
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _busy_s() -> float:
    t = psutil.cpu_times()
    return float(sum(t)) - float(t.idle) - float(getattr(t, "iowait", 0.0))


class CpuMeter:
    """CPU used while it runs by the server, this client, the publisher (a reaped child),
    Redis, and by everything else: on a shared 2-core machine the last one says how much
    the figures can be trusted."""

    def __init__(
        self, procs: list[psutil.Process], redis_url: str, *, publisher_before: float = 0.0
    ) -> None:
        """``publisher_before``: CPU seconds the publisher had used when this meter
        started; it is counted once the publisher is reaped, so it is taken off then."""
        self.procs = procs
        self.redis = redis.Redis.from_url(redis_url)
        self.wall = time.monotonic()
        self.server = cpu_seconds(procs)
        self.client = time.process_time()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.children = children.ru_utime + children.ru_stime + publisher_before
        self.redis_cpu = _redis_cpu_s(self.redis)
        self.busy = _busy_s()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.wall
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = {
            "server": cpu_seconds(self.procs) - self.server,
            "client": time.process_time() - self.client,
            "publisher": children.ru_utime + children.ru_stime - self.children,
            "redis": _redis_cpu_s(self.redis) - self.redis_cpu,
        }
        busy = _busy_s() - self.busy
        used["other"] = max(0.0, busy - sum(used.values()))
        self.redis.close()
        return {k: 100.0 * v / wall for k, v in used.items()}


def background_busy_pct(seconds: float = 1.0) -> float:
    """CPU busy on the whole machine, in % of one core, before the bench starts anything."""
    start = _busy_s()
    time.sleep(seconds)
    return 100.0 * (_busy_s() - start) / seconds


async def drain(load: SseLoad, expected: int, grace_s: float, quiet_s: float) -> None:
    """Wait until every expected event arrived, or nothing new came for ``quiet_s``, or
    ``grace_s`` passed: slow deliveries are counted, a missing one does not stall the run.
    The quiet period must outlast a backlogged server's pauses (GC, lease renewals), or
    its late events would be counted as lost."""
    deadline = time.monotonic() + grace_s
    last = -1
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        received = sum(s.events for s in load.subscribers)
        if received >= expected:
            return
        if received != last:
            last = received
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > quiet_s:
            return
        await asyncio.sleep(0.1)


async def run_case(
    server: Server,
    result: CaseResult,
    args: argparse.Namespace,
    phase: int,
    redis_port: int,
) -> None:
    warm_load = SseLoad(HOST, server.port, lambda i: server.subscribe_request(f"w{i}"))
    load = SseLoad(HOST, server.port, lambda i: server.subscribe_request(f"u{i}"))
    try:
        await warm_up(warm_load)
        await asyncio.sleep(args.settle)
        procs = server.processes()
        rss0 = rss_bytes(procs)

        report = await load.connect(
            result.clients,
            batch=args.batch,
            timeout_s=args.connect_timeout,
            deadline_s=args.ramp_deadline,
        )
        result.connected = report.connected
        result.connect_s = report.seconds
        result.connect_errors = report.errors
        log(
            f"{server.name}: {report.connected}/{result.clients} subscribers in "
            f"{report.seconds:.1f} s (errors: {describe_errors(report.errors)})"
        )
        hint = ""
        if "HTTP 503" in report.errors:
            # Nchan answers 503 while it has no Redis link, e.g. after someone else's
            # CLIENT KILL on a shared Redis.
            hint = " (503: the server lost Redis? with a shared Redis, try --own-redis)"
        if report.connected == 0:
            raise BenchError(f"no subscriber could connect{hint}")
        if report.errors:
            note = f"{report.requested - report.connected} subscribers failed to connect{hint}"
            result.error_note = "; ".join(x for x in (result.error_note, note) if x)
        # Let the server finish per-connection work it does after the response head.
        await asyncio.sleep(args.settle)
        procs = server.processes()
        result.quiet_s = await wait_quiet(procs)
        if result.quiet_s >= 1:
            log(f"{server.name}: busy for {result.quiet_s:.1f} s more after the ramp")
        rss1 = rss_bytes(procs)
        result.rss_before_mib = rss0 / 2**20
        result.rss_after_mib = rss1 / 2**20
        result.rss_per_conn_kib = (rss1 - rss0) / 1024 / report.connected
        result.redis_conns_idle = redis_connections(procs, redis_port)

        load.reset(phase)
        warm_load.reset(phase)
        spec = server.publisher_spec() | {
            "rate": result.rate,
            "duration": result.duration_s,
            "phase": phase,
            "max_events": args.sat_max_events if result.rate <= 0 else 10**9,
            "concurrency": args.sat_concurrency,
        }
        result.publisher = spec["kind"]
        meters: list[CpuMeter] = []

        async def before_start(publisher_pid: int) -> None:
            await wait_quiet(procs)
            # The publisher's start-up CPU is not part of the case (see CpuMeter).
            before = cpu_seconds([psutil.Process(publisher_pid)])
            meters.append(CpuMeter(procs, args.redis_url, publisher_before=before))

        pub = await run_publisher(spec, result.duration_s + 120.0, before_start)
        if not meters:
            raise BenchError("the publisher ended before it was ready")
        meter = meters[0]
        await drain(load, report.connected * pub.published, args.grace, args.quiet)
        cpu = meter.stop()
        result.server_cpu_pct = cpu["server"]
        result.client_cpu_pct = cpu["client"]
        result.publisher_cpu_pct = cpu["publisher"]
        result.redis_cpu_pct = cpu["redis"]
        result.other_cpu_pct = cpu["other"]
        result.redis_conns_load = redis_connections(server.processes(), redis_port)
        if result.redis_conns_load < result.redis_conns_idle:
            note = (
                f"Redis links fell from {result.redis_conns_idle} to "
                f"{result.redis_conns_load} during the load (killed by another Redis user? "
                "try --own-redis)"
            )
            log(f"{server.name}: {note}")
            result.error_note = "; ".join(x for x in (result.error_note, note) if x)

        snap: LoadSnapshot = load.snapshot()
        result.published = pub.published
        result.publish_errors = pub.errors
        result.publish_s = pub.seconds
        if pub.errors:
            note = f"{pub.errors} publish errors, first: {pub.first_error}"
            log(f"{server.name}: {note}")
            result.error_note = "; ".join(x for x in (result.error_note, note) if x)
        result.received = snap.received
        # A server that falls behind delivers after the publisher is done: the window runs
        # to the last event received, or the rate would count late deliveries as on time.
        window = max(pub.seconds, (snap.last_event_ns - pub.start_ns) / 1e9)
        result.delivery_s = window
        result.delivered_per_s = snap.received / window if window > 0 else 0.0
        expected = report.connected * pub.published
        result.completeness = snap.received / expected if expected else None
        lat = sorted(snap.latencies_ms)
        result.p50_ms = percentile(lat, 50)
        result.p99_ms = percentile(lat, 99)
        result.max_ms = lat[-1] if lat else None
        result.lost_connections = snap.lost
        result.starved = snap.starved
        result.min_events = snap.min_events
        if snap.dups:
            note = f"{snap.dups} duplicate deliveries (not counted)"
            log(f"{server.name}: {note}")
            result.error_note = "; ".join(x for x in (result.error_note, note) if x)
        if snap.starved:
            note = f"{snap.starved} open subscribers received nothing"
            log(f"{server.name}: {note}")
            result.error_note = "; ".join(x for x in (result.error_note, note) if x)
        result.duplicates = snap.dups
        result.stray = snap.stray
        result.unparsed = snap.other
    finally:
        await load.close()
        await warm_load.close()


# --------------------------------------------------------------------------------------
# Orchestration, report


def machine_info(redis_url: str, nginx: str | None) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "event_loop": loop_factory()[1],
    }
    try:
        info["redis"] = redis.Redis.from_url(redis_url).info("server")["redis_version"]
    except redis.RedisError as e:
        info["redis"] = f"unreachable ({e})"
    info["nginx"] = "not found"
    if nginx:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10)
            info["nginx"] = out.stderr.strip().rsplit("/", 1)[-1]
    info["nchan"] = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "libnginx-mod-nchan"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0:
            info["nchan"] = out.stdout.strip()
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        info["herald"] = importlib.metadata.version("herald")
    return info


def find_nchan_module(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    return next((p for p in NCHAN_MODULE_PATHS if Path(p).is_file()), None)


def default_herald_command() -> str:
    beside = Path(sys.executable).parent / "herald"
    return str(beside) if beside.exists() else (shutil.which("herald") or "herald")


def delete_keys(redis_url: str, tag: str) -> int:
    """Delete every key whose name contains this run's random tag (never FLUSHALL)."""
    client = redis.Redis.from_url(redis_url)
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"*{tag}*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += int(client.unlink(*batch))
            batch.clear()
    if batch:
        deleted += int(client.unlink(*batch))
    return deleted


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"


def verdicts(results: list[CaseResult]) -> list[dict[str, str]]:
    """PASS/FAIL per target of the delivery engine (issue 16); n/a when a run lacks
    what a target compares (say which)."""
    ok = [r for r in results if not r.error]
    out: list[dict[str, str]] = []

    def add(target: str, status: str, detail: str) -> None:
        out.append({"target": target, "status": status, "detail": detail})

    def find(
        server: str, case: str, n: int | None, rate: float | None, procs: int = 1
    ) -> CaseResult | None:
        for r in ok:
            if (r.server, r.case, r.processes) == (server, case, procs) and (
                (n is None or r.clients == n) and (rate is None or r.rate == rate)
            ):
                return r
        return None

    def p99_target(label: str, case: str, n: int | None, rate: float, most: float) -> None:
        h, c = find("herald", case, n, rate), find("nchan", case, n, rate)
        if h is None or c is None or h.p99_ms is None or c.p99_ms is None:
            add(label, "n/a", "needs Herald and Nchan at that load in one run")
            return
        complete = (h.completeness or 0.0) >= 1.0 and h.connected == h.clients
        good = complete and h.p99_ms <= most * c.p99_ms
        clamp = ""
        if h.wanted_clients > h.clients:
            clamp = f"; only {h.clients:,} of {h.wanted_clients:,} (file limit)"
            good = False
        add(
            label,
            "PASS" if good else "FAIL",
            f"herald p99 {h.p99_ms:,.1f} ms vs nchan {c.p99_ms:,.1f} ms "
            f"({h.p99_ms / c.p99_ms:.2f}x, limit {most:g}x); delivered "
            f"{100 * (h.completeness or 0):.2f} %, connected {h.connected:,}/{h.clients:,}" + clamp,
        )

    n, rate, most = TARGET_BIG
    p99_target(
        f"{n:,} clients x {rate:g} ev/s, one process: 100 % delivered, p99 <= {most:g}x Nchan's",
        "fanout",
        n,
        rate,
        most,
    )
    n, rate, most = TARGET_SMALL
    p99_target(f"{n:,} clients x {rate:g} ev/s: p99 <= {most:g}x Nchan's", "fanout", n, rate, most)

    label = f"saturation, one process: deliveries/s >= {TARGET_SAT_RATIO:g}x Nchan's"
    h, c = find("herald", "max", None, None), find("nchan", "max", None, None)
    if h is not None and c is not None and c.delivered_per_s > 0:
        r = h.delivered_per_s / c.delivered_per_s
        add(
            label,
            "PASS" if r >= TARGET_SAT_RATIO else "FAIL",
            f"herald {h.delivered_per_s:,.0f}/s vs nchan {c.delivered_per_s:,.0f}/s ({r:.2f}x); "
            f"published through HTTP: herald {h.published:,}, nchan {c.published:,}",
        )
    else:
        add(label, "n/a", "needs both servers' max case")

    label = f"RSS per idle connection <= {TARGET_RSS_KIB:g} KiB at {TARGET_RSS_AT:,}"
    h = find("herald", "fanout", TARGET_RSS_AT, None)
    if h is not None and h.rss_per_conn_kib is not None:
        c = find("nchan", "fanout", TARGET_RSS_AT, None)
        theirs = f" (nchan {c.rss_per_conn_kib:.1f} KiB)" if c and c.rss_per_conn_kib else ""
        add(
            label,
            "PASS" if h.rss_per_conn_kib <= TARGET_RSS_KIB else "FAIL",
            f"{h.rss_per_conn_kib:.1f} KiB{theirs}",
        )
    else:
        add(label, "n/a", f"no Herald run at {TARGET_RSS_AT:,}")

    herald = [r for r in ok if r.server == "herald"]
    label = f"Redis connections per process <= {TARGET_REDIS_CONNS}"
    if herald:
        worst = max(r.redis_conns_per_process for r in herald)
        add(
            label,
            "PASS" if worst <= TARGET_REDIS_CONNS else "FAIL",
            f"max {worst:g} per process over {len(herald)} Herald cases",
        )
    else:
        add(label, "n/a", "no Herald run")

    procs, least = TARGET_SCALE
    label = f"--processes {procs}: saturation deliveries/s >= {least:g}x one process's"
    one, many = find("herald", "max", None, None), find("herald", "max", None, None, procs)
    if one is not None and many is not None and one.delivered_per_s > 0:
        r = many.delivered_per_s / one.delivered_per_s
        add(
            label,
            "PASS" if r >= least else "FAIL",
            f"{many.delivered_per_s:,.0f}/s vs {one.delivered_per_s:,.0f}/s ({r:.2f}x)",
        )
    else:
        add(label, "n/a", f"run with --processes 1,{procs}")

    n, rate, most = TARGET_IDLE
    p99_target(
        f"{n:,} idle connections on one process, {rate:g} ev/s: all connected, "
        f"p99 <= {most:g}x Nchan's",
        "idle",
        None,  # as many as the file limit allowed (see wanted_clients)
        rate,
        most,
    )
    return out


def print_report(
    info: dict[str, Any], results: list[CaseResult], checks: list[dict[str, str]]
) -> None:
    print(
        f"SSE fan-out, {info['date']}: {info['nproc']} CPUs ({info['cpu']}), Python "
        f"{info['python']} ({info['event_loop']}), Redis {info['redis']}, nginx "
        f"{info['nginx']}, Nchan {info['nchan']}, Herald {info.get('herald', '?')}"
    )
    header = (
        f"{'server':<7} {'case':<6} {'N':>6} {'conn':>6} {'redis i/l':>9} {'RSS/conn':>9} "
        f"{'rate':>5} {'pub':>6} {'deliv ev/s':>10} {'compl %':>8} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'lost':>5} {'srv CPU':>7} {'cli CPU':>7} {'oth CPU':>7}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        if r.error:
            case = r.case if r.processes == 1 else f"{r.case}x{r.processes}"
            print(f"{r.server:<7} {case:<6} {r.clients:>6,}  ERROR: {r.error.splitlines()[0]}")
            continue
        rate = "max" if r.rate <= 0 else fmt(r.rate, "g")
        conns = f"{r.redis_conns_idle}/{r.redis_conns_load}"
        case = r.case if r.processes == 1 else f"{r.case}x{r.processes}"
        print(
            f"{r.server:<7} {case:<6} {r.clients:>6,} {r.connected:>6,} {conns:>9} "
            f"{fmt(r.rss_per_conn_kib, '.1f'):>6} KiB {rate:>5} "
            f"{r.published:>6,} {fmt(r.delivered_per_s):>10} "
            f"{fmt(None if r.completeness is None else 100 * r.completeness, '.2f'):>8} "
            f"{fmt(r.p50_ms, '.1f'):>7} {fmt(r.p99_ms, '.1f'):>7} {r.lost_connections:>5} "
            f"{r.server_cpu_pct:>6.0f}% {r.client_cpu_pct:>6.0f}% {r.other_cpu_pct:>6.0f}%"
        )
    for r in results:
        if r.error_note:
            print(f"  note, {r.server} {r.case} N={r.clients:,}: {r.error_note}")
    feeds = sorted({f"{r.case}: {r.publisher}" for r in results if r.publisher})
    print(
        f"feeds: {'; '.join(feeds)}.  CPU in % of one core ({info['nproc']} cores); "
        f"'oth' is everything else on the machine (busy before start: "
        f"{info.get('busy_before_pct', 0):.0f}%).  Latency includes this client's own queueing."
    )
    pairs = [
        (h, c)
        for h in results
        for c in results
        if h.server == "herald"
        and c.server == "nchan"
        and not h.error
        and not c.error
        and (h.case, h.clients, h.rate, h.processes) == (c.case, c.clients, c.rate, c.processes)
    ]
    if pairs:
        print()
        print(
            "herald/nchan   "
            + "  ".join(f"{x:>9}" for x in ("redis", "RSS/conn", "deliv/s", "compl", "p50", "p99"))
        )
        for h, c in pairs:
            label = f"{h.case} N={h.clients:,}" + (f" x{h.processes}" if h.processes > 1 else "")
            print(
                f"{label:<14} "
                + "  ".join(
                    f"{x:>9}"
                    for x in (
                        ratio(h.redis_conns, c.redis_conns),
                        ratio(h.rss_per_conn_kib, c.rss_per_conn_kib),
                        ratio(h.delivered_per_s, c.delivered_per_s),
                        ratio(h.completeness, c.completeness),
                        ratio(h.p50_ms, c.p50_ms),
                        ratio(h.p99_ms, c.p99_ms),
                    )
                )
            )
    print()
    print("Herald targets:")
    for check in checks:
        print(f"  {check['status']:<4}  {check['target']}: {check['detail']}")


def parse_list(text: str, kind: Callable[[str], Any]) -> list[Any]:
    return [kind(x) for x in text.split(",") if x.strip()]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    # SIGTERM (a timeout, a kill) unwinds like Ctrl-C does under asyncio.Runner: the main
    # task is cancelled, so every finally below stops its server and the keys are deleted.
    main_task = asyncio.current_task()
    if main_task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    servers = parse_list(args.servers, str)
    clients = parse_list(args.clients, int)
    rates = parse_list(args.rate, float)
    if len(rates) == 1:
        rates *= len(clients)
    if len(rates) != len(clients):
        raise SystemExit("--rate takes one value, or one per --clients entry")
    processes = parse_list(args.processes, int)
    if not processes or min(processes) < 1:
        raise SystemExit("--processes takes whole numbers >= 1")
    cases: list[tuple[str, int, float, float, int]] = [
        ("fanout", n, r, args.duration, processes[0]) for n, r in zip(clients, rates, strict=True)
    ]
    if args.sat_seconds > 0:
        # Every process count runs the max case; the first also runs everything else.
        cases += [("max", args.sat_clients, 0.0, args.sat_seconds, p) for p in processes]
    if args.idle_clients > 0:
        cases.append(("idle", args.idle_clients, args.idle_rate, args.duration, processes[0]))
    own_redis: PrivateRedis | None = None
    if args.own_redis:
        own_redis = PrivateRedis(args.redis_server)
        own_redis.start()
        args.redis_url = own_redis.url
        log(f"private Redis at {own_redis.url}")
    try:
        return await _run(args, servers, cases, own_redis is not None)
    finally:
        if own_redis is not None:
            own_redis.stop()


async def _run(
    args: argparse.Namespace,
    servers: list[str],
    cases: list[tuple[str, int, float, float, int]],
    own_redis: bool,
) -> dict[str, Any]:
    tag = f"bench-{secrets.token_hex(4)}"
    redis_port = urlsplit(args.redis_url).port or 6379
    nginx = args.nginx or shutil.which("nginx")
    info = machine_info(args.redis_url, nginx)
    info["redis_private"] = own_redis
    info["nofile"] = raise_nofile(NOFILE)
    info["busy_before_pct"] = round(background_busy_pct(), 1)
    if info["busy_before_pct"] > 20:
        log(
            f"warning: the machine is already {info['busy_before_pct']:.0f}% busy (of one "
            "core) before the bench starts; figures will be noisy"
        )
    channels = [f"{tag}-c{i}" for i in range(len(cases))]

    herald: HeraldSetup | None = None
    results: list[CaseResult] = []
    setup_errors: dict[str, str] = {}
    try:
        if "herald" in servers:
            try:
                herald = HeraldSetup.create(
                    args.herald_cmd, args.redis_url, args.database_url, channels, tag
                )
            except (BenchError, OSError, subprocess.SubprocessError) as e:
                setup_errors["herald"] = str(e)
        module = find_nchan_module(args.nchan_module)
        if "nchan" in servers and (nginx is None or module is None):
            setup_errors["nchan"] = (
                "nginx or the nchan module not found (see --nginx, --nchan-module)"
            )
        # Each side holds one socket per subscriber: this process (the client) and each
        # server process, all under the same limit (the hard one cannot be raised here).
        most_clients = max(1, info["nofile"] - FD_MARGIN)
        for phase, ((case, wanted, rate, duration, procs), channel) in enumerate(
            zip(cases, channels, strict=True), start=1
        ):
            n = min(wanted, most_clients)
            if n < wanted:
                log(
                    f"{case}: {wanted:,} clients need {wanted + FD_MARGIN:,} file descriptors "
                    f"per process; RLIMIT_NOFILE allows {info['nofile']:,}: running {n:,}"
                )
            for name in servers:
                result = CaseResult(name, case, n, rate, duration, procs)
                result.wanted_clients = wanted
                results.append(result)
                if name in setup_errors:
                    result.error = setup_errors[name]
                    continue
                server: Server
                if name == "nchan":
                    assert nginx is not None and module is not None
                    server = NchanServer(
                        channel,
                        nginx=nginx,
                        module=module,
                        redis_url=args.redis_url,
                        namespace=tag,
                        processes=procs,
                    )
                elif name == "herald":
                    assert herald is not None
                    via = args.herald_publish
                    if via == "auto":
                        # Paced cases: the journal, as Herald's own producers publish.  Max
                        # case: through the server, like Nchan's publisher location, so the
                        # publish rate adapts to what the server sustains instead of an
                        # open-loop publisher burning one of the two cores and flooding it.
                        via = "http" if rate <= 0 else "journal"
                    server = HeraldServer(channel, herald, via, procs)
                else:
                    raise SystemExit(f"unknown server {name!r} (herald, nchan)")
                what = "max rate" if rate <= 0 else f"{rate:g} ev/s"
                on = f" on {procs} processes" if procs > 1 else ""
                log(f"{name}: {case} with {n:,} subscribers{on}, {what} for {duration:g} s")
                try:
                    server.start()
                    await run_case(server, result, args, phase, redis_port)
                except BenchError as e:
                    result.error = str(e)
                    log(f"{name}: {case} N={n}: {e}")
                finally:
                    # Keep the logs of a failed case for a look at what went wrong.
                    server.stop(keep=args.keep_logs or bool(result.error or result.error_note))
                # Give the kernel a moment to reap 10,000 closed sockets before the next
                # server's ramp, so TIME_WAIT/backlog work does not leak into its numbers.
                await asyncio.sleep(1.0)
    finally:
        deleted = delete_keys(args.redis_url, tag)
        log(f"deleted {deleted} Redis keys tagged {tag}")
    return {
        "machine": info,
        "config": {k: v for k, v in vars(args).items() if k not in ("json", "publisher")}
        | {"tag": tag},
        "results": [asdict(r) | {"redis_conns": r.redis_conns} for r in results],
        "checks": verdicts(results),
        "_results": results,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    env_redis = os.environ.get("HERALD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    env_db = os.environ.get(
        "HERALD_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    p.add_argument("--servers", default="herald,nchan", help="comma list (herald,nchan)")
    p.add_argument("--clients", default="1000,10000", help="subscriber counts, comma list")
    p.add_argument(
        "--rate", default="10", help="events/s published: one value, or one per --clients entry"
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds of publishing (10)")
    p.add_argument("--sat-clients", type=int, default=1000, help="subscribers in the max case")
    p.add_argument(
        "--sat-seconds", type=float, default=5.0, help="seconds of the max case; 0 skips it"
    )
    p.add_argument(
        "--sat-concurrency", type=int, default=8, help="publishes in flight in the max case"
    )
    p.add_argument(
        "--sat-max-events", type=int, default=20000, help="cap on events in the max case"
    )
    p.add_argument(
        "--processes",
        default="1",
        help="server processes (Herald --workers, Nchan worker_processes), comma list: the "
        "first runs every case, the others the max case only (e.g. 1,2)",
    )
    p.add_argument(
        "--idle-clients",
        type=int,
        default=TARGET_IDLE[0],
        help="subscribers in the idle case (capped by the file limit); 0 skips it",
    )
    p.add_argument("--idle-rate", type=float, default=TARGET_IDLE[1], help="ev/s, idle case")
    p.add_argument("--batch", type=int, default=500, help="subscribers connecting at once")
    p.add_argument("--connect-timeout", type=float, default=15.0, help="per subscriber, s")
    p.add_argument("--ramp-deadline", type=float, default=120.0, help="whole ramp, s")
    p.add_argument("--settle", type=float, default=2.0, help="pause before RSS samples, s")
    p.add_argument("--grace", type=float, default=15.0, help="most wait for late events, s")
    p.add_argument(
        "--quiet", type=float, default=5.0, help="stop waiting after this long with no event, s"
    )
    p.add_argument("--redis-url", default=env_redis)
    p.add_argument(
        "--own-redis",
        action="store_true",
        help="run both servers on a private redis-server started for the run (on a free "
        "loopback port) instead of --redis-url: use it when the shared Redis is busy",
    )
    p.add_argument(
        "--redis-server",
        default=shutil.which("redis-server") or "redis-server",
        help="redis-server binary for --own-redis",
    )
    p.add_argument("--database-url", default=env_db, help="Herald's PostgreSQL")
    p.add_argument("--herald-cmd", default=default_herald_command())
    p.add_argument(
        "--herald-publish",
        choices=("auto", "journal", "http"),
        default="auto",
        help="feed Herald through RedisJournal or POST /api/publish; auto (default): the "
        "journal for paced cases, HTTP for the max case (as Nchan is fed)",
    )
    p.add_argument("--nginx", default=None, help="nginx binary (default: from PATH)")
    p.add_argument("--nchan-module", default=None, help="path of ngx_nchan_module.so")
    p.add_argument("--keep-logs", action="store_true", help="keep server temp dirs and logs")
    p.add_argument("--json", action="store_true", help="JSON on stdout instead of the table")
    p.add_argument("--publisher", help=argparse.SUPPRESS)
    return p


def main() -> None:
    args = build_parser().parse_args()
    factory, _ = loop_factory()
    if args.publisher:
        spec = json.loads(args.publisher)
        with asyncio.Runner(loop_factory=factory) as runner:
            print(json.dumps(runner.run(publisher_main(spec))))
        return
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            report = runner.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("interrupted: servers stopped, Redis keys deleted")
        raise SystemExit(130) from None
    results: list[CaseResult] = report.pop("_results")
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print_report(report["machine"], results, report["checks"])


if __name__ == "__main__":
    main()

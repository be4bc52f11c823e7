"""Run a real ``herald serve`` process against the test Redis and PostgreSQL.

Used by integration and browser tests that need what only a real server has:
uvicorn, signals, restarts, the SSE wire format.  Readiness is the server's own
"herald: ready" line within a deadline; a restart keeps the same port so clients
(EventSource included) reconnect to the same URL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.conftest import DATABASE_URL, REDIS_URL
from tests.tokens import hs256_token

HERALD = str(Path(sys.executable).with_name("herald"))
TEST_SECRET = "integration-secret-integration-secret-0123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HeraldProcess:
    """``herald serve`` on 127.0.0.1:<port> with the test services and a known secret."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        serve_args: tuple[str, ...] = (),
        **env: str,
    ) -> None:
        self.workdir = workdir
        self.serve_args = serve_args  # more `herald serve` options: --no-embedded, --workers
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # A port we picked may be taken by another process before the first start
        # binds it; then that start moves to another.  Restarts keep their port.
        self._may_move = port is None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        self.env.update(
            {
                "HERALD_REDIS_URL": REDIS_URL,
                "HERALD_DATABASE_URL": DATABASE_URL,
                "HERALD_JWT_SECRET": TEST_SECRET,
                "HERALD_LOG_LEVEL": "WARNING",
                # Off unless a test asks: servers of different tests share Redis
                # (and so the task queues) but not always the database.
                "HERALD_WORKER_IN_PROCESS": "false",
                "HERALD_SCHEDULER_IN_PROCESS": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.env.update(env)
        self.extra_env = dict(env)  # what this server was given beyond the defaults
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []
        self._ready = threading.Event()

    def token(self, user: str, *roles: str, ttl: int = 3600) -> str:
        """A token this server accepts: signed here with its secret, as ``herald token``
        does (~1.3 s a call as a process, most of it imports; the command itself has
        its own tests), or by that command when the server's JWT settings differ."""
        jwt_settings = {k: v for k, v in self.env.items() if k.startswith("HERALD_JWT_")}
        if jwt_settings == {"HERALD_JWT_SECRET": TEST_SECRET}:
            return hs256_token(TEST_SECRET, user, roles, ttl)
        args = [HERALD, "token", "--user", user, "--ttl", str(ttl)]
        for role in roles:
            args += ["--role", role]
        out = subprocess.run(args, env=self.env, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    _migrated: set[str] = set()  # database URLs migrated in this test session

    def start(self, timeout: float = 30.0) -> None:
        db = self.env["HERALD_DATABASE_URL"]
        if db not in HeraldProcess._migrated:
            subprocess.run([HERALD, "migrate"], env=self.env, capture_output=True, check=True)
            HeraldProcess._migrated.add(db)
        for attempt in range(3):
            self._ready.clear()
            if attempt:
                self.log.clear()
            self.proc = subprocess.Popen(
                [HERALD, "serve", "--port", str(self.port), *self.serve_args],
                cwd=self.workdir,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            self._pump_thread = threading.Thread(target=self._pump, args=(self.proc,), daemon=True)
            self._pump_thread.start()
            deadline = time.monotonic() + timeout
            while not self._ready.wait(0.05):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    break
            if self._ready.is_set():
                self._may_move = False
                return
            self._pump_thread.join(5)  # the dead process's last lines
            moved = self._may_move and any("address already in use" in line for line in self.log)
            self.stop()
            if not moved or attempt == 2:
                raise AssertionError("herald serve did not start:\n" + "".join(self.log[-40:]))
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.log.append(line)
            if line.startswith("herald: ready"):
                self._ready.set()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> float:
        """Stop the server; returns how long it took to exit."""
        if self.proc is None:
            return 0.0
        began = time.monotonic()
        self.proc.send_signal(sig)
        proc, self.proc = self.proc, None
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        finally:
            self._pump_thread.join(5)
            if proc.stdout is not None:
                proc.stdout.close()
        return time.monotonic() - began

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> HeraldProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.stop(signal.SIGKILL)


class RedisServer:
    """A throw-away ``redis-server`` on a free loopback port, no persistence.

    ``frozen()`` stops it with SIGSTOP (the process lives, the kernel still accepts
    connections, nothing answers) and resumes it with SIGCONT on the way out."""

    def __init__(self, binary: str = "redis-server") -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.binary = binary
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

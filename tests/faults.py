"""A TCP proxy that can cut a service off: every open connection is closed and
new ones are refused until it is restored.  To the client that is exactly a
database (or Redis) going down and coming back, without stopping the shared
server other tests use.  Runs its own event loop in a thread, so both this
process and subprocesses can go through it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url


class TcpProxy:
    """Listens on 127.0.0.1; forwards to ``host:port``, or to a unix socket when
    ``port`` is None and ``host`` is its path."""

    def __init__(self, target_host: str, target_port: int | None) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._cut = False
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.connections = 0  # accepted while up

    # -- control (from the test's thread or loop) ---------------------------------

    def start(self) -> TcpProxy:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def stop(self) -> None:
        self._cut = True
        self._call(self._close_all)
        if self._server is not None:
            self._call(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def cut(self) -> None:
        """Close every connection and refuse new ones."""
        self._cut = True
        self._call(self._close_all)

    def restore(self) -> None:
        self._cut = False

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        self.cut()
        try:
            yield
        finally:
            self.restore()

    # -- the proxy ---------------------------------------------------------------

    def _call(self, fn: object) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                fn()  # type: ignore[operator]
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)

    def _close_all(self) -> None:
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                sock = w.get_extra_info("socket")
                if sock is not None:
                    # An RST, like a server that died: no orderly goodbye.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                w.close()
        self._writers.clear()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def boot() -> None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._started.set()

        self._loop.run_until_complete(boot())
        self._loop.run_forever()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.close()
            return
        host, port = self.target
        try:
            if port is None:
                up_reader, up_writer = await asyncio.open_unix_connection(host)
            else:
                up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        self.connections += 1
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                self._writers.discard(dst)
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def proxy_database(url: str) -> tuple[TcpProxy, str]:
    """A started proxy in front of the PostgreSQL at ``url`` (TCP, or a unix socket
    given as ``?host=/dir`` as the embedded server's URL does) and the URL that
    goes through it."""
    parsed = make_url(url)
    socket_dir = parsed.query.get("host")
    if parsed.host is None and isinstance(socket_dir, str):
        sockets = sorted(Path(socket_dir).glob(".s.PGSQL.*"))
        sockets = [p for p in sockets if not p.name.endswith(".lock")]
        assert sockets, f"no PostgreSQL socket in {socket_dir}"
        proxy = TcpProxy(str(sockets[0]), None).start()
    else:
        proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432).start()
    through = parsed.difference_update_query(["host", "port"]).set(
        host="127.0.0.1", port=proxy.port
    )
    return proxy, through.render_as_string(hide_password=False)

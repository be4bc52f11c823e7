"""An HTTP proxy in front of a real server that can answer stream requests itself.

To a browser behind it, ``refuse(503, seconds=5)`` is exactly a server answering
503 for five seconds (a deploy, a full process), without a test hook in Herald:
every other request, and every stream request outside a refusal, is forwarded.
``cut()`` drops the open streams, as a restarting server would.  Each stream
request is recorded with the time it arrived and the status it got, so a test
can check how a client spaced its attempts.

Every request travels on its own connection (the proxy forwards it with
``Connection: close``), so each one is seen and can be answered here.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass

import orjson

# The SSE endpoints: the events stream and a chat message's stream.
STREAM_PATH = re.compile(r"^/api/(events|messages/[^/]+/events)$")
_REASONS = {429: "Too Many Requests", 503: "Service Unavailable"}


@dataclass(frozen=True, slots=True)
class Attempt:
    at: float  # time.monotonic() when the request arrived
    status: int


@dataclass(slots=True)
class _Refusal:
    status: int
    headers: dict[str, str]
    times: int | None  # None: until lifted


class FaultyHttpProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.attempts: list[Attempt] = []
        self.lifted = asyncio.Event()
        self._refusal: _Refusal | None = None
        self._server: asyncio.Server | None = None
        self._streams: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FaultyHttpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def refuse(
        self,
        status: int,
        *,
        seconds: float | None = None,
        times: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer stream requests with ``status`` for ``seconds`` or ``times`` requests."""
        self._refusal = _Refusal(status, headers or {}, times)
        self.lifted.clear()
        if seconds is not None:
            asyncio.get_running_loop().call_later(seconds, self._lift)

    def _lift(self) -> None:
        self._refusal = None
        self.lifted.set()

    def cut(self) -> None:
        """Drop every open stream."""
        for writer in list(self._streams):
            writer.close()
        self._streams.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        request_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = [line for line in header_lines if line]
        length = next(
            (int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length:")),
            0,
        )
        body = await reader.readexactly(length) if length else b""
        is_stream = method == "GET" and STREAM_PATH.match(target.split("?")[0]) is not None
        if is_stream and self._refusal is not None:
            await self._answer(writer, self._refusal)
            return
        await self._forward(reader, writer, method, target, headers, body, is_stream)

    async def _answer(self, writer: asyncio.StreamWriter, refusal: _Refusal) -> None:
        self.attempts.append(Attempt(time.monotonic(), refusal.status))
        if refusal.times is not None:
            refusal.times -= 1
            if refusal.times <= 0:
                self._lift()
        body = orjson.dumps({"error": "proxy_refused", "detail": "refused by the test proxy"})
        lines = [
            f"HTTP/1.1 {refusal.status} {_REASONS.get(refusal.status, 'Error')}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Connection: close",
            *(f"{k}: {v}" for k, v in refusal.headers.items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def _forward(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        method: str,
        target: str,
        headers: list[str],
        body: bytes,
        is_stream: bool,
    ) -> None:
        kept = [h for h in headers if h.split(":", 1)[0].strip().lower() != "connection"]
        head = "\r\n".join([f"{method} {target} HTTP/1.1", *kept, "Connection: close"])
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        up_writer.write(head.encode("latin-1") + b"\r\n\r\n" + body)
        if is_stream:
            self._streams.add(writer)

        async def downstream() -> None:
            first = True
            while data := await up_reader.read(65536):
                if first and is_stream:
                    self.attempts.append(Attempt(time.monotonic(), int(data.split(b" ", 2)[1])))
                first = False
                writer.write(data)
                await writer.drain()

        async def upstream() -> None:
            # Nothing more comes from the browser; its EOF means it went away.
            while await reader.read(65536):
                pass

        tasks = [asyncio.ensure_future(downstream()), asyncio.ensure_future(upstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._streams.discard(writer)
            up_writer.close()
            writer.close()

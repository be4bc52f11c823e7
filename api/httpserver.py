"""Herald's HTTP/1.1 protocol, run by uvicorn (``http=``) in place of its own.

Why its own: an open event stream is mostly an idle connection, and at 10,000 of
them uvicorn's httptools protocol was most of a stream's memory (~10 KiB of the
~16 per connection in ``bench/fanout.py``'s census): a ``__dict__`` per protocol
and per request, an ``asyncio.Event`` (with its deque) per request and per
connection, a pipeline deque per connection and a parser with its bound
callbacks for as long as the connection lives.  This protocol speaks the same
HTTP/1.1 and ASGI (it is parsed by the same httptools) with ``__slots__``
objects, a future only while something waits, a queue only when a client
pipelines, and no parser while the request has been read in full and its
response is being sent (a new one is made when the next bytes arrive).

It also carries the limits a public server needs, per process:

* a cap on open connections (``HERALD_HTTP_MAX_CONNECTIONS``, above the SSE cap so
  plain requests still answer while streams are at theirs): the connection
  beyond it gets ``503 server_busy`` and is closed at once;
* a cap on the request line plus headers (``HERALD_HTTP_MAX_HEADER_BYTES``): 431,
  closed, having buffered no more than the cap and one read;
* a deadline for the head (``HERALD_HTTP_HEADER_TIMEOUT_S``), counted from when the
  connection opened or its previous response ended: slow or silent clients are
  closed (408);
* idle keep-alive connections close after ``HERALD_HTTP_KEEPALIVE_S``.

WebSocket upgrades are not offered (Herald has no WebSocket route): such a
request is answered as plain HTTP.
"""

from __future__ import annotations

import asyncio
import contextvars
import http
import logging
import re
import urllib.parse
from collections import deque
from collections.abc import Callable
from typing import Any

import httptools
import orjson
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from herald.journal.runtime.settings import Settings

__all__ = ["Exchange", "HttpProtocol", "guarded_protocol", "uvicorn_limits"]

_log = logging.getLogger("uvicorn.error")
_access = logging.getLogger("uvicorn.access")

HIGH_WATER = 65536  # request body bytes buffered before the socket stops being read

_BAD_NAME = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")


def _status_line(code: int) -> bytes:
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {code} {phrase}\r\n".encode()


_STATUS_LINES = {code: _status_line(code) for code in range(100, 600)}
_ASGI = {"version": "3.0", "spec_version": "2.3"}
_DISCONNECT = {"type": "http.disconnect"}
_addresses: dict[Any, Any] = {}  # one tuple per distinct local address, not per connection


def _address(info: Any, shared: bool = False) -> tuple[str, int | None] | None:
    if isinstance(info, list | tuple) and len(info) >= 2:
        pair: tuple[str, int | None] = (str(info[0]), int(info[1]))
    elif isinstance(info, str):
        pair = (info, None)
    else:
        return None
    if shared and len(_addresses) < 64:
        return _addresses.setdefault(pair, pair)  # type: ignore[no-any-return]
    return pair


def _refusal(status: str, code: str, detail: str) -> bytes:
    body = orjson.dumps({"error": code, "detail": detail})
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


def _wake_all(waiters: list[asyncio.Future[None]] | None) -> None:
    for waiter in waiters or ():
        if not waiter.done():
            waiter.set_result(None)


async def _wait(waiters: list[asyncio.Future[None]], loop: asyncio.AbstractEventLoop) -> None:
    waiter = loop.create_future()
    waiters.append(waiter)
    try:
        await waiter
    finally:
        if waiter in waiters:
            waiters.remove(waiter)


class Exchange:
    """One request and its response: what the app's ``receive`` and ``send`` act on.
    ``flow`` is the connection (its ``write_paused``); the SSE writer reads
    ``chunked_encoding``, ``response_started``, ``response_complete``, ``transport``
    and ``disconnected`` to write body chunks to the transport itself."""

    __slots__ = (
        "body",
        "chunked_encoding",
        "disconnected",
        "expect_continue",
        "expected_length",
        "flow",
        "keep_alive",
        "live",
        "more_body",
        "news",
        "on_gone",
        "receivers",
        "response_complete",
        "response_started",
        "scope",
        "transport",
    )

    def __init__(
        self, conn: HttpProtocol, scope: dict[str, Any], expect_continue: bool, keep_alive: bool
    ) -> None:
        self.flow = conn
        self.transport: asyncio.Transport = conn.transport
        self.scope = scope
        self.expect_continue = expect_continue
        self.keep_alive = keep_alive
        self.live = True  # the app still runs: a completed response starts the next request
        self.disconnected = False
        self.body: bytearray | None = None
        self.more_body = True
        self.news = False  # something for receive() since it last returned
        self.receivers: list[asyncio.Future[None]] | None = None
        self.on_gone: Callable[[], object] | None = None
        self.response_started = False
        self.response_complete = False
        self.chunked_encoding: bool | None = None
        self.expected_length = 0

    def wake(self) -> None:
        self.news = True
        if self.receivers is not None:
            _wake_all(self.receivers)
            self.receivers = None
        if self.on_gone is not None and self.gone:
            on_gone, self.on_gone = self.on_gone, None
            on_gone()

    @property
    def gone(self) -> bool:
        """The client went away or the response is complete: what ``receive()``
        reports as ``http.disconnect``."""
        return self.disconnected or self.response_complete

    def when_gone(self, callback: Callable[[], object] | None) -> None:
        """Call ``callback`` once when ``gone`` turns true (None: no longer).  For a
        request whose body has been received, instead of a pending ``receive()``:
        an idle event stream holds no coroutine and no future for it."""
        self.on_gone = callback
        if callback is not None and self.gone:
            self.wake()

    async def run(self, app: Any) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            _log.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started:
                await self._send_500()
            else:
                self.transport.close()
        else:
            if result is not None:
                _log.error("ASGI callable should return None, but returned '%s'.", result)
                self.transport.close()
            elif not self.response_started and not self.disconnected:
                _log.error("ASGI callable returned without starting response.")
                await self._send_500()
            elif not self.response_complete and not self.disconnected:
                _log.error("ASGI callable returned without completing response.")
                self.transport.close()
        finally:
            self.live = False

    async def _send_500(self) -> None:
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"21"),
            (b"connection", b"close"),
        ]
        await self.send({"type": "http.response.start", "status": 500, "headers": headers})
        await self.send({"type": "http.response.body", "body": b"Internal Server Error"})

    async def receive(self) -> dict[str, Any]:
        conn = self.flow
        if self.expect_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.expect_continue = False
        if not self.disconnected and not self.response_complete:
            conn.resume_reads()
            if not self.news:
                if self.receivers is None:
                    self.receivers = []
                await _wait(self.receivers, conn.loop)
            self.news = False
        if self.disconnected or self.response_complete:
            return dict(_DISCONNECT)
        body, self.body = self.body, None
        return {"type": "http.request", "body": bytes(body or b""), "more_body": self.more_body}

    async def send(self, message: Any) -> None:
        conn = self.flow
        if conn.write_paused and not self.disconnected:
            await conn.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected 'http.response.start', got {kind!r}")
            self._start(message)
        elif not self.response_complete:
            if kind != "http.response.body":
                raise RuntimeError(f"expected 'http.response.body', got {kind!r}")
            self._body(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(f"{kind!r} sent after the response was complete")

    def _start(self, message: Any) -> None:
        self.response_started = True
        self.expect_continue = False
        status = message["status"]
        scope = self.scope
        if _access.isEnabledFor(logging.INFO) and _access.hasHandlers():
            _access.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(scope),  # type: ignore[arg-type]
                scope["method"],
                get_path_with_query_string(scope),  # type: ignore[arg-type]
                scope["http_version"],
                status,
            )
        out = [_STATUS_LINES[status]]
        said_close = False
        for name, value in (*self.flow.server_state.default_headers, *message.get("headers", ())):
            if _BAD_NAME.search(name):
                raise RuntimeError("Invalid HTTP header name.")
            if _BAD_VALUE.search(value):
                raise RuntimeError("Invalid HTTP header value.")
            name = name.lower()
            if name == b"content-length" and self.chunked_encoding is None:
                self.expected_length = int(value.decode())
                self.chunked_encoding = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.expected_length = 0
                self.chunked_encoding = True
            elif name == b"connection" and b"close" in [
                token.strip().lower() for token in value.split(b",")
            ]:
                self.keep_alive = False
                said_close = True
            out += (name, b": ", value, b"\r\n")
        if not self.keep_alive and not said_close:
            out.append(b"connection: close\r\n")
        if self.chunked_encoding is None and scope["method"] != "HEAD" and status not in (204, 304):
            self.chunked_encoding = True
            out.append(b"transfer-encoding: chunked\r\n")
        out.append(b"\r\n")
        self.transport.write(b"".join(out))

    def _body(self, body: bytes, more_body: bool) -> None:
        if self.scope["method"] == "HEAD":
            self.expected_length = 0
        elif self.chunked_encoding:
            if body and more_body:
                self.transport.write(b"%x\r\n%b\r\n" % (len(body), body))
            elif body:
                self.transport.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body))
            elif not more_body:
                self.transport.write(b"0\r\n\r\n")
        else:
            if len(body) > self.expected_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_length -= len(body)
            self.transport.write(body)
        if more_body:
            return
        if self.expected_length != 0:
            raise RuntimeError("Response content shorter than Content-Length")
        self.response_complete = True
        self.wake()
        if not self.keep_alive:
            self.transport.close()
        if self.live:
            self.flow.response_done()


class HttpProtocol(asyncio.Protocol):
    """One client connection: parses requests with httptools, runs each as an
    ``Exchange`` in a task, one at a time (pipelined ones wait their turn)."""

    max_connections = 10256
    max_header_bytes = 65536
    header_timeout_s = 10.0

    __slots__ = (
        "app_state",
        "awaiting_head",
        "client",
        "config",
        "drainers",
        "exchange",
        "expect_continue",
        "head_bytes",
        "head_timer",
        "headers",
        "idle_timer",
        "loop",
        "parser",
        "parser_idle",
        "queued",
        "read_paused",
        "scheme",
        "scope",
        "server",
        "server_state",
        "transport",
        "url",
        "write_paused",
    )

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.loop = _loop or asyncio.get_event_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int | None] | None = None
        self.scheme = "http"
        self.parser: httptools.HttpRequestParser | None = None
        self.parser_idle = True  # between two requests: the parser may be dropped
        self.exchange: Exchange | None = None
        self.queued: deque[Exchange] | None = None  # pipelined, parsed, not started
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = None  # type: ignore[assignment]
        self.scope: dict[str, Any] = None  # type: ignore[assignment]
        self.expect_continue = False
        self.read_paused = False
        self.write_paused = False
        self.drainers: list[asyncio.Future[None]] | None = None
        self.awaiting_head = True
        self.head_bytes = 0
        self.head_timer: asyncio.TimerHandle | None = None
        self.idle_timer: asyncio.TimerHandle | None = None

    # -- the transport's callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        connections = self.server_state.connections
        over = len(connections) >= self.max_connections
        connections.add(self)
        self.transport = transport  # type: ignore[assignment]
        self.server = _address(transport.get_extra_info("sockname"), shared=True)
        self.client = _address(transport.get_extra_info("peername"))
        if transport.get_extra_info("sslcontext"):
            self.scheme = "https"
        if over:
            self._refuse(
                "503 Service Unavailable",
                "server_busy",
                f"this process already has {self.max_connections} open connections",
            )
            return
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        self._cancel_timers()
        exchange = self.exchange
        if exchange is not None:
            if not exchange.response_complete:
                exchange.disconnected = True
            exchange.wake()
        self.resume_writing()
        if exc is None:
            self.transport.close()
        self.parser = None
        self.queued = None

    def eof_received(self) -> None:
        """A half-closed connection is closed (asyncio closes it on a falsy answer)."""

    def data_received(self, data: bytes) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        parser = self.parser
        if parser is None:
            parser = self.parser = httptools.HttpRequestParser(self)
            # Answer the first of pipelined requests even when it asks to close.
            parser.set_dangerous_leniencies(lenient_data_after_close=True)
        if self.awaiting_head:
            self.head_bytes += len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no WebSocket here: the request was handed over as plain HTTP
        except httptools.HttpParserError:
            _log.warning("Invalid HTTP request received.")
            self._bad_request("Invalid HTTP request received.")
            return
        if self.awaiting_head and self.head_bytes > self.max_header_bytes:
            # Still no complete head after this read: what is buffered is head.
            self._refuse(
                "431 Request Header Fields Too Large",
                "headers_too_large",
                f"the request line and headers exceed {self.max_header_bytes} bytes",
            )
        elif self.parser_idle and self.queued is None:
            self.parser = None  # the request is all read; a new parser for the next

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        if self.write_paused:
            self.write_paused = False
            drainers, self.drainers = self.drainers, None
            _wake_all(drainers)

    # -- httptools' callbacks

    def on_message_begin(self) -> None:
        self.parser_idle = False
        self.url = b""
        self.expect_continue = False
        self.headers = []
        self.scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "root_path": self.config.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
        }

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.awaiting_head = False
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        parser = self.parser
        assert parser is not None
        scope, self.scope = self.scope, None  # type: ignore[assignment]
        version = parser.get_http_version()
        scope["method"] = parser.get_method().decode("ascii")
        if version != "1.1":
            scope["http_version"] = version
        url, self.url = httptools.parse_url(self.url), b""
        raw_path = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        root = self.config.root_path
        scope["path"] = root + path
        scope["raw_path"] = root.encode("ascii") + raw_path
        scope["query_string"] = url.query or b""
        self.headers = None  # type: ignore[assignment]
        keep_alive = version != "1.0" and parser.should_keep_alive()
        exchange = Exchange(self, scope, self.expect_continue, keep_alive)
        current, self.exchange = self.exchange, exchange
        if current is None or current.response_complete:
            self._run(exchange)
        else:
            self.pause_reads()
            if self.queued is None:
                self.queued = deque()
            self.queued.append(exchange)

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        assert exchange is not None
        if exchange.response_complete:
            return
        if exchange.body is None:
            exchange.body = bytearray()
        exchange.body += body
        if len(exchange.body) > HIGH_WATER:
            self.pause_reads()
        exchange.wake()

    def on_message_complete(self) -> None:
        self.parser_idle = True
        exchange = self.exchange
        assert exchange is not None
        if exchange.response_complete:
            return
        exchange.more_body = False
        exchange.wake()

    # -- requests and responses

    def _run(self, exchange: Exchange) -> None:
        coro = exchange.run(self.config.loaded_app)
        if getattr(self.config, "reset_contextvars", False):
            task = self.loop.create_task(coro, context=contextvars.Context())
        else:
            task = self.loop.create_task(coro)
        tasks = self.server_state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def response_done(self) -> None:
        """The current exchange's response is complete: start the next pipelined
        request, or wait for the next head."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.resume_reads()
        if self.queued:
            exchange = self.queued.popleft()
            if not self.queued:
                self.queued = None
            self._run(exchange)
            return
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.idle_timer = self.loop.call_later(self.config.timeout_keep_alive, self._close_idle)
        self._await_head()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close an idle connection, let a running
        response finish without keep-alive."""
        if self.exchange is None or self.exchange.response_complete:
            self.transport.close()
        else:
            self.exchange.keep_alive = False

    async def drain(self) -> None:
        if self.write_paused:
            if self.drainers is None:
                self.drainers = []
            await _wait(self.drainers, self.loop)

    def pause_reads(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reads(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    # -- limits

    def _await_head(self) -> None:
        self.awaiting_head = True
        self.head_bytes = 0
        if self.head_timer is not None:
            self.head_timer.cancel()
        self.head_timer = self.loop.call_later(self.header_timeout_s, self._head_too_slow)

    def _head_too_slow(self) -> None:
        self.head_timer = None
        if self.awaiting_head and not self.transport.is_closing():
            self._refuse(
                "408 Request Timeout",
                "header_timeout",
                f"no complete request head within {self.header_timeout_s:g} s",
            )

    def _close_idle(self) -> None:
        self.idle_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self.head_timer, self.idle_timer):
            if timer is not None:
                timer.cancel()
        self.head_timer = self.idle_timer = None

    def _refuse(self, status: str, code: str, detail: str) -> None:
        self._answer_and_close(_refusal(status, code, detail))

    def _bad_request(self, message: str) -> None:
        body = message.encode("ascii")
        head = [_STATUS_LINES[400]]
        for name, value in self.server_state.default_headers:
            head += (name, b": ", value, b"\r\n")
        head += (
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body),
            body,
        )
        self._answer_and_close(b"".join(head))

    def _answer_and_close(self, response: bytes) -> None:
        """Answer without the app (a limit or a malformed request) and close."""
        self._cancel_timers()
        self.awaiting_head = False
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()


def guarded_protocol(settings: Settings) -> type[HttpProtocol]:
    """The protocol class for uvicorn's ``http=`` with this process's limits."""
    return type(
        "HeraldHttpProtocol",
        (HttpProtocol,),
        {
            "__slots__": (),
            "max_connections": settings.http_connection_cap,
            "max_header_bytes": settings.http_max_header_bytes,
            "header_timeout_s": settings.http_header_timeout_s,
        },
    )


def uvicorn_limits(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.Config`` that carry these limits."""
    return {
        "http": guarded_protocol(settings),
        "timeout_keep_alive": settings.http_keepalive_s,
        # uvicorn's own cap answers at request time, after the head: ours refuses
        # at accept, so a flood of silent connections cannot pile up.
        "limit_concurrency": None,
    }

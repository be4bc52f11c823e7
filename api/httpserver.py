"""The HTTP/1.1 protocol uvicorn runs for Herald, with the limits a public server needs.

uvicorn's httptools protocol bounds neither the size of a request's head nor the
time a client takes to send it, and keeps a connection that never sends anything
open for ever.  ``guarded_protocol`` adds, per process:

* a cap on open connections (``HERALD_HTTP_MAX_CONNECTIONS``, above the SSE cap so
  plain requests still answer while streams are at theirs): the connection
  beyond it gets ``503 server_busy`` and is closed at once;
* a cap on the request line plus headers (``HERALD_HTTP_MAX_HEADER_BYTES``): 431,
  closed, having buffered no more than the cap and one read;
* a deadline for the head (``HERALD_HTTP_HEADER_TIMEOUT_S``), counted from when the
  connection opened or its previous response ended: slow or silent clients are
  closed (408);
* idle keep-alive connections close after ``HERALD_HTTP_KEEPALIVE_S`` (uvicorn's
  own timer, armed when a response ends).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from herald.journal.runtime.settings import Settings

__all__ = ["GuardedProtocol", "guarded_protocol", "uvicorn_limits"]


def _refusal(status: str, code: str, detail: str) -> bytes:
    body = orjson.dumps({"error": code, "detail": detail})
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class GuardedProtocol(HttpToolsProtocol):
    """httptools' protocol with the limits above; ``guarded_protocol`` sets them."""

    max_connections = 10256
    max_header_bytes = 65536
    header_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        over = len(self.connections) >= self.max_connections
        super().connection_made(transport)
        if over:
            self._refuse(
                "503 Service Unavailable",
                "server_busy",
                f"this process already has {self.max_connections} open connections",
            )
            return
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._awaiting_head:
            super().data_received(data)
            return
        self._head_bytes += len(data)
        super().data_received(data)
        # Still no complete head after this read: what is buffered is head.
        if self._awaiting_head and self._head_bytes > self.max_header_bytes:
            self._refuse(
                "431 Request Header Fields Too Large",
                "headers_too_large",
                f"the request line and headers exceed {self.max_header_bytes} bytes",
            )

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_head()

    def _await_head(self) -> None:
        self._awaiting_head = True
        self._head_bytes = 0
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_too_slow)

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._awaiting_head and not self.transport.is_closing():
            self._refuse(
                "408 Request Timeout",
                "header_timeout",
                f"no complete request head within {self.header_timeout_s:g} s",
            )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, status: str, code: str, detail: str) -> None:
        self._cancel_head_timer()
        self._awaiting_head = False
        if not self.transport.is_closing():
            self.transport.write(_refusal(status, code, detail))
            self.transport.close()


def guarded_protocol(settings: Settings) -> type[GuardedProtocol]:
    """The protocol class for uvicorn's ``http=`` with this process's limits."""
    return type(
        "HeraldHttpProtocol",
        (GuardedProtocol,),
        {
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

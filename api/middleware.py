"""Per-request bookkeeping: a request id for the logs, and one count per response.

* The request id is the caller's ``X-Request-ID`` when it is sane (1-128 of
  ``A-Z a-z 0-9 . _ : -``), else a fresh random one.  It is bound to a context
  variable for the rest of the request, so every log line written while handling
  it (uvicorn's access line included) carries it, and it is echoed back in the
  response's ``X-Request-ID`` header.
* ``herald_http_requests{route, method, status}`` counts each response under the
  route *template* Starlette matched (``/api/messages/{message_id}``), never the
  raw path, so ids in URLs cannot explode the label set; unmatched paths count
  as ``other``, unknown methods as ``OTHER``.
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from herald.journal.runtime.metrics import HTTP_REQUESTS

__all__ = ["REQUEST_ID", "ObserveRequests", "bind_request_id", "count_request", "request_id_of"]

REQUEST_ID: ContextVar[str | None] = ContextVar("herald_request_id", default=None)
HEADER = b"x-request-id"

_SANE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def bind_request_id(scope: Scope) -> str:
    """The request's id (the caller's if sane, else new), bound for this task's logs."""
    rid = request_id_of(scope)
    REQUEST_ID.set(rid)
    return rid


def request_id_of(scope: Scope) -> str:
    """The caller's ``X-Request-ID`` if it is sane, else a new one."""
    rid = None
    for name, value in scope["headers"]:
        if name == HEADER:
            if _SANE_ID.fullmatch(value):
                rid = value.decode()
            break
    return rid if rid is not None else secrets.token_hex(8)


def count_request(route: str, method: str, status: int) -> None:
    HTTP_REQUESTS.labels(route, method if method in _METHODS else "OTHER", str(status)).inc()


class ObserveRequests:
    """ASGI middleware for ``bind_request_id`` and ``count_request`` around ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = (HEADER, bind_request_id(scope).encode())
        status = 500  # what the client gets if the app fails before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            # Starlette's router leaves the route it chose (full or 405 match) in the scope.
            count_request(getattr(scope.get("route"), "path", "other"), scope["method"], status)

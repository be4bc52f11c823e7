"""JSON error responses: every refusal names its problem; nothing becomes a bare 500."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from herald.api.auth import AuthError

__all__ = ["ApiError", "error_response", "exception_handlers", "render_error"]

log = logging.getLogger("herald.api")


class ApiError(Exception):
    """Raised by handlers for a clean 4xx/5xx with a machine-readable code."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.extra = extra or {}
        self.headers = headers


def error_response(
    status: int,
    code: str,
    detail: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {"error": code, "detail": detail, **(extra or {})}
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.detail, exc.extra, exc.headers)


async def _auth_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, AuthError)
    headers = {"WWW-Authenticate": 'Bearer realm="herald"'} if exc.status == 401 else None
    return error_response(exc.status, exc.code, exc.detail, headers=headers)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "an unexpected error occurred; it was logged")


async def render_error(request: Request, exc: Exception) -> Response:
    """The response Starlette's exception handling would give, for routes served
    outside it."""
    for kind, handler in exception_handlers.items():
        if isinstance(exc, kind):
            return await handler(request, exc)
    raise exc  # pragma: no cover - Exception is always matched


exception_handlers = {
    ApiError: _api_error,
    AuthError: _auth_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}

"""Errors to HTTP, once: every refusal is JSON ``{"error": <code>, "detail": <text>}``.

``ERRORS`` is the one table from an error code to its HTTP status (and a
``Retry-After`` where a retry is the answer). Route code raises ``ApiError`` or
``AuthError``; errors raised below the API (journal, database, task queue,
message writer, schedules, member directory) carry a class attribute ``code`` and
propagate unchanged: ``exception_handlers`` maps them by that code. The README's
error table and the OpenAPI document are checked against ``ERRORS``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from herald.api.auth import AuthError
from herald.api.members.directory import MemberLookupError
from herald.api.responses import JSONResponse
from herald.journal.base import JournalError
from herald.journal.envelope import EnvelopeError
from herald.journal.maintenance.rows import DispatchFailed, JobRunning, UnknownJob
from herald.journal.maintenance.schedule import InvalidSchedule, InvalidTimezone
from herald.journal.messages.writer import WriterOverloaded
from herald.journal.runtime.db import DatabaseUnavailable
from herald.journal.tasks.entries import TaskQueueError

__all__ = [
    "DOMAIN_ERRORS",
    "ERRORS",
    "ApiError",
    "ErrorCode",
    "error_response",
    "exception_handlers",
    "render_error",
    "status_of",
]

log = logging.getLogger("herald.api")


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """What one error code answers: its status, a ``Retry-After`` (seconds) for a
    domain error that carries none, and a fixed ``detail`` where the exception's
    own text would expose internals (a Redis or driver message)."""

    status: int
    retry_after_s: int | None = None
    detail: str | None = None


_UNAVAILABLE = "retry shortly"

ERRORS: dict[str, ErrorCode] = {
    # 400: a query or path value that cannot be parsed
    "bad_cursor": ErrorCode(400),
    "bad_topic": ErrorCode(400),
    "bad_user": ErrorCode(400),
    "bad_limit": ErrorCode(400),
    "bad_filter": ErrorCode(400),
    "bad_format": ErrorCode(400),
    "bad_offset": ErrorCode(400),
    "bad_route": ErrorCode(400),
    "invalid_request": ErrorCode(400),
    "invalid_state": ErrorCode(400),
    "missing_code": ErrorCode(400),
    "wrong_browser": ErrorCode(400),
    # 408, 431: a request head too slow or too large (answered by the HTTP protocol)
    "header_timeout": ErrorCode(408),
    "headers_too_large": ErrorCode(431),
    # 401: no usable credential
    "missing_token": ErrorCode(401),
    "bad_header": ErrorCode(401),
    "malformed_token": ErrorCode(401),
    "bad_signature": ErrorCode(401),
    "token_expired": ErrorCode(401),
    "missing_claim": ErrorCode(401),
    "bad_claims": ErrorCode(401),
    "bad_algorithm": ErrorCode(401),
    "bad_ticket": ErrorCode(401),
    # 403: a valid credential that may not do this
    "role_missing": ErrorCode(403),
    "unknown_topic": ErrorCode(403),
    "topic_forbidden": ErrorCode(403),
    "user_forbidden": ErrorCode(403),
    "ticket_scope": ErrorCode(403),
    "cross_site_request": ErrorCode(403),
    "connectors_disabled": ErrorCode(403),
    "connector_path_forbidden": ErrorCode(403),
    # 404: unknown, or another user's (the same answer, so ids cannot be probed)
    "not_found": ErrorCode(404),
    "message_not_found": ErrorCode(404),
    "source_not_found": ErrorCode(404),
    "attachment_not_found": ErrorCode(404),
    "printer_not_found": ErrorCode(404),
    "job_not_found": ErrorCode(404),
    "page_event_not_found": ErrorCode(404),
    "run_not_found": ErrorCode(404),
    "member_not_found": ErrorCode(404),
    # 405
    "method_not_allowed": ErrorCode(405),
    # 409: the resource's state forbids it
    "message_ended": ErrorCode(409),
    "message_id_taken": ErrorCode(409),
    "not_a_connector": ErrorCode(409),
    "job_running": ErrorCode(409),
    "ambiguous_page_event": ErrorCode(409),
    # 413
    "body_too_large": ErrorCode(413),
    "envelope_too_large": ErrorCode(413),
    "file_too_large": ErrorCode(413),
    "task_too_large": ErrorCode(413),
    # 415
    "unsupported_media_type": ErrorCode(415),
    "unsupported_file_type": ErrorCode(415),
    # 422: a body (or path value) that parses but is not acceptable
    "invalid_json": ErrorCode(422),
    "invalid_body": ErrorCode(422),
    "invalid_envelope": ErrorCode(422),
    "invalid_task": ErrorCode(422),
    "invalid_uuid": ErrorCode(422),
    "invalid_character": ErrorCode(422),
    "invalid_multipart": ErrorCode(422),
    "missing_file": ErrorCode(422),
    "missing_filename": ErrorCode(422),
    "empty_file": ErrorCode(422),
    "invalid_connector_path": ErrorCode(422),
    "connector_path_not_directory": ErrorCode(422),
    "invalid_server_url": ErrorCode(422),
    "printer_identity_immutable": ErrorCode(422),
    "terminal_event": ErrorCode(422),
    "invalid_schedule": ErrorCode(422),
    "unknown_filter_fields": ErrorCode(422),
    "invalid_timezone": ErrorCode(422),
    # 429: wait, then retry
    "too_many_connections": ErrorCode(429, retry_after_s=5),
    "replay_budget_exhausted": ErrorCode(429),
    "upstream_rate_limited": ErrorCode(429, retry_after_s=60),
    # 500: a bug; logged with its traceback
    "internal_error": ErrorCode(500),
    # 503: a service Herald needs is down, busy or not configured
    "journal_error": ErrorCode(503, detail=f"Redis failed; {_UNAVAILABLE}"),
    "journal_unavailable": ErrorCode(503, detail=f"Redis is unavailable; {_UNAVAILABLE}"),
    "database_unavailable": ErrorCode(503, retry_after_s=2),
    "database_busy": ErrorCode(503),
    "oauth_unconfigured": ErrorCode(503),
    "writer_overloaded": ErrorCode(503, retry_after_s=5),
    "messages_unavailable": ErrorCode(503),
    "server_busy": ErrorCode(503, retry_after_s=5),
    "tasks_unavailable": ErrorCode(503),
    "task_queue_error": ErrorCode(503, detail=f"the task queue failed; {_UNAVAILABLE}"),
    "queue_unavailable": ErrorCode(503, detail=f"the task queue is unavailable; {_UNAVAILABLE}"),
    "dispatch_failed": ErrorCode(503),
    "member_lookup_failed": ErrorCode(503),
    "upstream_unavailable": ErrorCode(503, retry_after_s=3),
    "upstream_invalid": ErrorCode(503),
    "upstream_unauthorized": ErrorCode(503),
    "member_directory_busy": ErrorCode(503, retry_after_s=1),
    "member_directory_not_configured": ErrorCode(503),
}

# Errors raised below the API; each class (and subclass) has a ``code`` in ERRORS.
DOMAIN_ERRORS: tuple[type[Exception], ...] = (
    JournalError,
    EnvelopeError,
    DatabaseUnavailable,
    WriterOverloaded,
    TaskQueueError,
    InvalidSchedule,
    InvalidTimezone,
    UnknownJob,
    JobRunning,
    DispatchFailed,
    MemberLookupError,
)


def status_of(code: str) -> int:
    """The HTTP status of ``code``; an unknown code is a programmer error, so 500."""
    entry = ERRORS.get(code)
    return 500 if entry is None else entry.status


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
    return JSONResponse(
        {"error": code, "detail": detail, **(extra or {})}, status_code=status, headers=headers
    )


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.detail, exc.extra, exc.headers)


async def _auth_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, AuthError)
    headers = {"WWW-Authenticate": 'Bearer realm="herald"'} if exc.status == 401 else None
    return error_response(exc.status, exc.code, exc.detail, headers=headers)


async def _domain_error(request: Request, exc: Exception) -> Response:
    code = getattr(exc, "code", None)
    entry = ERRORS.get(code) if isinstance(code, str) else None
    if entry is None or not isinstance(code, str):
        return await _unexpected(request, exc)
    status = entry.status
    if status >= 500:
        log.warning("%s on %s %s: %s", code, request.method, request.url.path, exc)
    wait = getattr(exc, "retry_after_s", None) or entry.retry_after_s
    headers = None if wait is None else {"Retry-After": str(wait)}
    return error_response(status, code, entry.detail or str(exc), headers=headers)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "an unexpected error occurred; it was logged")


async def render_error(request: Request, exc: Exception) -> Response:
    """The response Starlette's exception handling would give, for routes served
    outside it."""
    for kind, handler in exception_handlers.items():
        if isinstance(exc, kind):
            response: Response = await handler(request, exc)
            return response
    raise exc  # pragma: no cover - Exception is always matched


exception_handlers: dict[Any, Any] = {
    ApiError: _api_error,
    AuthError: _auth_error,
    **dict.fromkeys(DOMAIN_ERRORS, _domain_error),
    HTTPException: _http_error,
    Exception: _unexpected,
}

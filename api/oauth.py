"""MCP OAuth routes: start a connection, receive the browser's redirect, read a status.

``POST /api/oauth/connect`` queues the ``mcp.oauth.connect`` task (see
``herald.workers.oauth``) and answers 202 at once; the authorization URL arrives as the
``mcp.oauth.awaiting_redirect`` event.  ``GET /api/oauth/callback`` needs no
credential: the browser arrives from the authorization server, and the single-use
``state`` is what proves which task (and user) the code belongs to.  ``GET
/api/oauth/{task_id}/status`` answers from the owner's journal, and from the task's
status record once the stream no longer holds the task's events.
"""

from __future__ import annotations

import html
import re
import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from herald.api.errors import ApiError
from herald.api.openapi import OBJECT, endpoint
from herald.api.responses import NO_STORE, JSONResponse
from herald.api.schemas import parse_body, read_json
from herald.api.state import AppState, state_of
from herald.journal.base import Entry, JournalUnavailable
from herald.journal.oauth.addresses import literal_refusal, parse_networks
from herald.journal.oauth.pending import (
    PendingAuthorizations,
    UnsafeUrl,
    binding_of,
    bound_to,
    check_url,
)
from herald.journal.positions import NAME_RE, ZERO_ID, StreamId, Target
from herald.journal.tasks.queue import InvalidTask, TaskQueue, TaskQueueError

__all__ = ["routes"]

CALLBACK_PATH = "/api/oauth/callback"
EVENTS = "mcp.oauth"
# The kinds are named here rather than imported: api never imports workers.
CONNECT, EXCHANGE = "mcp.oauth.connect", "mcp.oauth.exchange"
# RFC 6749 appendix A.4: scope tokens are printable ASCII without space, " or \.
_SCOPE_RE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+( [\x21\x23-\x5b\x5d-\x7e]+)*$")
# The browser cookie outlives the state by the time a connect may wait in the queue.
_COOKIE_SLACK_S = 600
_MAX_PARAM = {"state": 512, "code": 4096, "error": 128, "error_description": 1024, "iss": 2048}
# The callback URL carries the code and state: never let it leak through a Referer,
# and the page loads nothing.
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
}
_RECORD_STATUS = {"deferred": "awaiting_redirect", "running": "queued", "retrying": "queued"}
# Clock skew tolerated between the API host (the status record's times) and Redis
# (stream ids) when a status lookup picks where to start reading.
_SKEW_MS = 5 * 60 * 1000


class ConnectBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    server_url: str = Field(min_length=1, max_length=2048)
    scope: str | None = Field(None, min_length=1, max_length=1000, pattern=_SCOPE_RE.pattern)
    client_id: str | None = Field(None, min_length=1, max_length=256)


def _tasks(state: AppState) -> TaskQueue:
    if state.tasks is None:
        raise ApiError(503, "tasks_unavailable", "this server runs without a task queue")
    return state.tasks


def browser_cookie(task_id: str) -> str:
    """The cookie that binds a connect's callback to the browser that started it."""
    return f"herald_oauth_{task_id}"


def redirect_uri(state: AppState, request: Request) -> str:
    """HERALD_OAUTH_REDIRECT_URL, else PUBLIC_URL's callback.  Never the request's
    own Host: a caller could make Herald register a redirect to a host of theirs."""
    settings = state.settings
    if settings.oauth_redirect_url:
        return settings.oauth_redirect_url
    if not settings.public_url:
        raise ApiError(
            503,
            "oauth_unconfigured",
            "OAuth needs HERALD_PUBLIC_URL (or HERALD_OAUTH_REDIRECT_URL) configured: "
            "the redirect URI is never taken from the request",
        )
    return settings.public_url.rstrip("/") + CALLBACK_PATH


@endpoint(
    "Connect the caller to an MCP server with OAuth",
    {202: OBJECT},
    body=ConnectBody,
    errors=(
        "invalid_server_url",
        "invalid_task",
        "tasks_unavailable",
        "task_queue_error",
        "queue_unavailable",
        "journal_unavailable",
    ),
    tags=("oauth",),
)
async def connect(request: Request) -> Response:
    """Queue a connection to an MCP server for the caller; 202 ``{task_id, status_url}``."""
    state = state_of(request)
    principal = await state.principal(request)
    callback_url = redirect_uri(state, request)  # 503 oauth_unconfigured first
    body = parse_body(ConnectBody, await read_json(request, limit=16 * 1024))
    try:
        server_url = check_url(body.server_url, "server_url")
    except UnsafeUrl as e:
        raise ApiError(422, "invalid_server_url", str(e)) from e
    # A literal address (or localhost) is refused here; names are resolved and
    # checked by the worker before it connects anywhere.
    allowed = parse_networks(state.settings.oauth_allowed_networks)
    reason = literal_refusal(urlsplit(server_url).hostname or "", allowed)
    if reason is not None:
        raise ApiError(
            422,
            "invalid_server_url",
            f"server_url points at a {reason} address; Herald does not connect there "
            "(HERALD_OAUTH_ALLOWED_NETWORKS can allow a network)",
        )
    browser_key = secrets.token_urlsafe(32)
    payload: dict[str, Any] = {
        "server_url": server_url,
        "redirect_uri": callback_url,
        "binding": binding_of(browser_key),
    }
    if body.scope is not None:
        payload["scope"] = body.scope
    if body.client_id is not None:
        payload["client_id"] = body.client_id
    try:
        task_id = await _tasks(state).enqueue(
            CONNECT, principal.user, payload, context={"server_url": server_url}, events=EVENTS
        )
    except InvalidTask as e:
        raise ApiError(422, e.code, str(e)) from e
    except (TaskQueueError, JournalUnavailable) as e:
        raise ApiError(503, e.code, "the task queue is unavailable; try again") from e
    response = JSONResponse(
        {"task_id": task_id, "status_url": f"/api/oauth/{task_id}/status"},
        status_code=202,
        headers=NO_STORE,
    )
    # The callback must come from this browser: it alone holds the key.  Lax, so the
    # authorization server's top-level redirect carries it.
    response.set_cookie(
        browser_cookie(task_id),
        browser_key,
        max_age=state.settings.oauth_state_ttl_s + _COOKIE_SLACK_S,
        path=CALLBACK_PATH,
        secure=callback_url.startswith("https://"),
        httponly=True,
        samesite="lax",
    )
    return response


def _wants_html(request: Request) -> bool:
    # A browser following the authorization server's redirect asks for HTML; curl,
    # scripts and tests ask for anything else and get JSON.
    return "text/html" in request.headers.get("accept", "")


def _page(request: Request, status: int, title: str, text: str, body: dict[str, Any]) -> Response:
    if not _wants_html(request):
        return JSONResponse(body, status, headers=NO_STORE)
    page = (
        "<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        f"<title>{html.escape(title)}</title>"
        "<body style='font:16px system-ui;max-width:32em;margin:4em auto'>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>"
    )
    return HTMLResponse(page, status_code=status, headers=_PAGE_HEADERS)


def _refuse(request: Request, code: str, detail: str) -> Response:
    return _page(
        request,
        400,
        "Connection not completed",
        f"{detail} Start the connection again from the app.",
        {"error": code, "detail": detail},
    )


class CallbackQuery(BaseModel):
    """The parameters the callback reads (``_MAX_PARAM``), each at most that long."""

    state: str | None = Field(None, max_length=_MAX_PARAM["state"])
    code: str | None = Field(None, max_length=_MAX_PARAM["code"])
    error: str | None = Field(None, max_length=_MAX_PARAM["error"])
    error_description: str | None = Field(None, max_length=_MAX_PARAM["error_description"])
    iss: str | None = Field(None, max_length=_MAX_PARAM["iss"])


@endpoint(
    "The authorization server's redirect (its state is the credential)",
    {200: OBJECT},
    auth="none",
    query=CallbackQuery,
    errors=(
        "invalid_request",
        "invalid_state",
        "missing_code",
        "wrong_browser",
        "tasks_unavailable",
    ),
    tags=("oauth",),
    description="Answers an HTML page to browsers (Accept: text/html), JSON otherwise.",
)
async def callback(request: Request) -> Response:
    """The authorization server's redirect: hand the code (or its error) to the task.

    The state is taken (deleted) before anything else happens, so a replayed or
    forged redirect finds nothing: 400 ``invalid_state``, and no event (there is no
    task to attribute it to).  Answers an HTML page to browsers, JSON otherwise.
    """
    state = state_of(request)
    params: dict[str, str] = {}
    for name, limit in _MAX_PARAM.items():
        values = request.query_params.getlist(name)
        if len(values) > 1:
            return _refuse(request, "invalid_request", f"'{name}' is given more than once.")
        if values:
            if len(values[0]) > limit:
                return _refuse(request, "invalid_request", f"'{name}' is over {limit} characters.")
            params[name] = values[0]
    if not params.get("state"):
        return _refuse(request, "invalid_state", "The redirect has no 'state'.")
    if not params.get("code") and not params.get("error"):
        return _refuse(request, "missing_code", "The redirect has neither 'code' nor 'error'.")
    tasks = _tasks(state)
    assert state.redis is not None  # a task queue implies Redis
    pending = PendingAuthorizations(state.redis, state.settings.oauth_state_ttl_s)
    try:
        # Looked at, then taken only by the browser that started it: a callback from
        # elsewhere leaves it for the right one.
        seen = await pending.peek(params["state"])
        if seen is not None and not bound_to(
            seen, request.cookies.get(browser_cookie(seen.task_id))
        ):
            return _refuse(
                request,
                "wrong_browser",
                "This authorization was started in another browser; finish it there.",
            )
        record = await pending.take(params["state"]) if seen is not None else None
    except (RedisError, OSError) as e:
        raise ApiError(503, "tasks_unavailable", "Redis is unavailable; try again") from e
    if record is None:
        return _refuse(
            request,
            "invalid_state",
            "This authorization is unknown, expired or was already used.",
        )
    payload: dict[str, Any] = {"sealed": record.sealed, "server_url": record.server_url}
    for name in ("code", "error", "error_description", "iss"):
        if name in params:
            payload[name] = params[name]
    try:
        await tasks.enqueue(
            EXCHANGE,
            record.owner,
            payload,
            task_id=record.task_id,
            context={"server_url": record.server_url},
            events=EVENTS,
            publish_queued=False,
            max_attempts=3,
        )
    except (TaskQueueError, JournalUnavailable) as e:
        raise ApiError(503, "tasks_unavailable", "the task queue is unavailable") from e
    body = {"task_id": record.task_id, "status_url": f"/api/oauth/{record.task_id}/status"}
    if "error" in params:
        page = _page(
            request,
            200,
            "Connection declined",
            f"The authorization server answered: {params['error']}. You can close this window.",
            {**body, "error": params["error"]},
        )
    else:
        page = _page(
            request,
            202,
            "Connecting…",
            f"Authorization received for {record.server_url}. You can close this window.",
            body,
        )
    page.delete_cookie(browser_cookie(record.task_id), path=CALLBACK_PATH)
    return page


async def _newest_event(state: AppState, user: str, task_id: str, since_ms: int) -> Entry | None:
    """The owner's newest ``mcp.oauth.*`` envelope for ``task_id``, or None."""
    target = Target.user(user)
    newest = await state.journal.latest(target, EVENTS + ".")
    if newest is None:
        return None
    if _task_of(newest) == task_id:  # the usual case: the user's latest connection
        return newest
    # Otherwise read forward, at most two stream lengths, from before the task's
    # latest enqueue: the exchange's enqueue comes up to a state TTL after the
    # connect's events, and the clocks of the API host and Redis may differ.
    back_ms = state.settings.oauth_state_ttl_s * 1000 + _SKEW_MS
    after = StreamId(max(since_ms - back_ms, 0), 0) if since_ms else ZERO_ID
    found, scanned, page = None, 0, state.settings.replay_page
    while scanned < 2 * state.settings.stream_maxlen:
        batch = (await state.journal.read_after(target, after, limit=page)).entries
        for entry in batch:
            if entry.type.startswith(EVENTS + ".") and _task_of(entry) == task_id:
                found = entry
        if len(batch) < page:
            break
        scanned += len(batch)
        after = batch[-1].id
    return found


def _task_of(entry: Entry) -> str | None:
    data = orjson.loads(entry.envelope).get("data")
    return data.get("task_id") if isinstance(data, dict) else None


def _ms(text: object) -> int:
    """Milliseconds of an RFC 3339 time; 0 for anything else (stored fields are data
    a publisher wrote, and their type is not guaranteed)."""
    if not isinstance(text, str) or not text:
        return 0
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except (ValueError, OverflowError):
        return 0


@endpoint(
    "The caller's OAuth task",
    {200: OBJECT},
    errors=("not_found", "tasks_unavailable", "journal_unavailable"),
    tags=("oauth",),
)
async def status(request: Request) -> Response:
    """The caller's OAuth task as ``{task_id, status, ..., source}``; 404 if it is not
    theirs, not an OAuth task, or forgotten.

    ``status`` is ``queued``, ``awaiting_redirect`` (with ``authorization_url``),
    ``expired`` (the redirect did not come back in time), ``completed`` (with
    ``server_url``, ``scope``, ``expires_at``) or ``failed`` (with ``error``).
    """
    state = state_of(request)
    principal = await state.principal(request)
    task_id = request.path_params["task_id"]
    not_found = ApiError(404, "not_found", f"no OAuth task {task_id!r} for this user")
    if not NAME_RE.fullmatch(task_id):
        raise not_found
    try:
        record = await _tasks(state).status(task_id)
    except (RedisError, OSError) as e:
        raise ApiError(503, "tasks_unavailable", "Redis is unavailable; try again") from e
    if record is not None and (
        record.get("user") != principal.user or record.get("kind") not in (CONNECT, EXCHANGE)
    ):
        raise not_found  # someone else's task looks exactly like no task
    try:
        since = _ms(record.get("queued_at")) if record else 0
        entry = await _newest_event(state, principal.user, task_id, since)
    except JournalUnavailable as e:
        raise ApiError(503, e.code, "the journal is unavailable; try again") from e
    if entry is not None:
        envelope = orjson.loads(entry.envelope)
        raw = envelope.get("data")
        data = {k: v for k, v in raw.items() if k != "task_id"} if isinstance(raw, dict) else {}
        step = entry.type[len(EVENTS) + 1 :]
        if step == "failed":
            data = {
                "error": {"code": data.pop("code", ""), "message": data.pop("message", "")},
                **data,
            }
        expires = _ms(data.get("expires_at"))
        if (
            step == "awaiting_redirect"
            and expires
            and expires < datetime.now(UTC).timestamp() * 1000
        ):
            step = "expired"
        body = {"task_id": task_id, "status": step, **data, "time": envelope["time"]}
        return JSONResponse(
            {**body, "source": "journal", "event_id": str(entry.id)}, headers=NO_STORE
        )
    if record is not None:
        # The stream was trimmed past the task's events: the status record still
        # knows the outcome (a deferred connect is waiting for its redirect).
        step = record.get("status", "")
        step = step if isinstance(step, str) else ""
        body = {"task_id": task_id, "status": _RECORD_STATUS.get(step, step)}
        if isinstance(record.get("result"), dict):
            body.update(record["result"])
        if "error" in record:
            body["error"] = record["error"]
        body["time"] = record.get("finished_at") or record.get("updated_at")
        return JSONResponse({**body, "source": "record"}, headers=NO_STORE)
    raise not_found


routes = [
    Route("/api/oauth/connect", connect, methods=["POST"]),
    Route(CALLBACK_PATH, callback, methods=["GET"]),
    Route("/api/oauth/{task_id}/status", status, methods=["GET"]),
]

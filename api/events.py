"""``GET /api/events`` (SSE) and ``GET /api/events/history`` (JSON pages for curl).

Everything that can refuse a request happens before the stream starts, because
EventSource stops reconnecting on a non-200: authentication (401), topic access
(403), the cursor (400), the connection cap and the replay budget (429).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from prometheus_client import Gauge
from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from herald.api.auth import AuthError, Principal
from herald.api.errors import ApiError
from herald.api.openapi import SSE, endpoint
from herald.api.schemas import whole_number
from herald.api.sse import Closer, Emit, EventStreamResponse
from herald.api.state import AppState, state_of
from herald.api.tickets import stream_cookie_name
from herald.journal.base import JournalUnavailable
from herald.journal.positions import CursorError, Target
from herald.journal.runtime.metrics import (
    ENVELOPES_DELIVERED,
    REPLAY_DENIALS,
    REPLAYS,
    SSE_CONNECTIONS,
)
from herald.journal.wire import retry_field
from herald.streams.budget import retry_after_header
from herald.streams.cursor import USER_KEY, Cursor, key_of
from herald.streams.hub_redis import HubUnavailable
from herald.streams.session import Overflowed, Session, SessionLimits

__all__ = [
    "EVENTS_PATH",
    "history",
    "refuse_beyond_process_cap",
    "stream_ended",
    "stream_events",
    "stream_started",
    "take_connection_slot",
]

# How long a closing stream waits for Redis to take its connection slot back.
_RELEASE_WAIT_S = 1.0

EVENTS_PATH = "/api/events"
MAX_HISTORY_LIMIT = 1000
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}

# Label children resolved once: the hot path only adds to them, once per page or batch.
_DELIVERED_SSE = ENVELOPES_DELIVERED.labels(endpoint=EVENTS_PATH)
_DELIVERED_HISTORY = ENVELOPES_DELIVERED.labels(endpoint=EVENTS_PATH + "/history")
_OPEN_SSE = SSE_CONNECTIONS.labels(endpoint=EVENTS_PATH)


def readable_targets(
    state: AppState, principal: Principal, topics: list[str], user: str | None = None
) -> dict[str, Target]:
    """The caller's own stream (or ``user``'s: admins only, 403 otherwise) plus each
    requested topic it may read (403 otherwise)."""
    targets = {USER_KEY: user_target(principal, user)}
    allowed = state.settings.topics
    for name in topics:
        try:
            target = Target.topic(name)
        except ValueError as e:
            raise ApiError(400, "bad_topic", str(e)) from e
        if not principal.has_any_role("admin"):
            roles = allowed.get(name)
            if roles is None:
                raise AuthError(403, "unknown_topic", f"topic {name!r} is not readable here")
            if "*" not in roles and not principal.has_any_role(*roles):
                raise AuthError(
                    403,
                    "topic_forbidden",
                    f"topic {name!r} needs one of the roles: {', '.join(roles)}",
                )
        targets[key_of(target)] = target
    return targets


def user_target(principal: Principal, user: str | None) -> Target:
    """The user stream a request reads: ``?user=`` names another user's, for admins."""
    if user is None or user == principal.user:
        return Target.user(principal.user)
    if not principal.has_any_role("admin"):
        raise AuthError(403, "user_forbidden", "only an admin may read another user's events")
    try:
        return Target.user(user)
    except ValueError as e:
        raise ApiError(400, "bad_user", str(e)) from e


def parse_cursor(text: str | None) -> Cursor | None:
    if text is None or text == "":
        return None
    try:
        return Cursor.parse(text)
    except CursorError as e:
        raise ApiError(400, "bad_cursor", str(e)) from e


@contextlib.asynccontextmanager
async def _journal_errors_as_503() -> AsyncIterator[None]:
    """Redis failing on the way in is the server's problem, not a 500."""
    try:
        yield
    except (RedisError, OSError) as e:
        raise ApiError(503, "journal_unavailable", "Redis is unavailable; retry shortly") from e


def session_limits(state: AppState, **overrides: int) -> SessionLimits:
    s = state.settings
    base = {"replay_page": s.replay_page, "max_replay_events": s.max_replay_events}
    return SessionLimits(**{**base, **overrides})


async def charge_if_replaying(
    state: AppState, principal: Principal, session: Session, *, from_start: bool = False
) -> None:
    """A connect or read with past events to deliver costs one replay; one with
    nothing to replay costs nothing."""
    try:
        backlog = await session.has_backlog(from_start=from_start)
    except JournalUnavailable as e:
        raise ApiError(503, e.code, "the journal is unavailable; retry shortly") from e
    if backlog:
        await charge_replay(state, principal)


async def charge_replay(state: AppState, principal: Principal) -> None:
    """Charge one replay to the caller's budget; 429 ``replay_budget_exhausted`` when
    it is spent (a denied request does not extend its own window)."""
    async with _journal_errors_as_503():
        wait_s = await state.budgets.charge_replay(principal.user)
    if wait_s > 0:
        REPLAY_DENIALS.inc()
        raise ApiError(
            429,
            "replay_budget_exhausted",
            f"more than {state.settings.replay_budget} replays in "
            f"{state.settings.replay_window_s} s; retry after {wait_s:.1f} s",
            headers={"Retry-After": retry_after_header(wait_s)},
        )
    REPLAYS.inc()


def ended_at_once(state: AppState) -> Response | None:
    """While the process shuts down (``AppState.close_streams``), a stream request is
    answered with a stream that ends at once: its ``retry:`` field only, so EventSource
    reconnects (elsewhere, once this process stops listening), and no connection slot
    or replay is charged for it.  None otherwise."""
    if not state.closing:
        return None
    body = retry_field(state.settings.retry_ms)
    return Response(body, media_type="text/event-stream", headers=SSE_HEADERS)


def refuse_beyond_process_cap(state: AppState) -> None:
    """503 when this process already serves ``HERALD_MAX_CONNECTIONS`` streams: a
    process cap, unlike the per-user one, so the load balancer should pick another."""
    cap = state.settings.max_connections
    if state.open_streams >= cap:
        raise ApiError(
            503,
            "server_busy",
            f"this server already serves {cap} streams; retry shortly",
            headers={"Retry-After": "5"},
        )


async def take_connection_slot(state: AppState, principal: Principal) -> str:
    """One of the user's connection slots (all processes), or a 429; returns its id."""
    conn_id = state.leases.new_id()
    async with _journal_errors_as_503():
        held = await state.budgets.acquire(principal.user, [conn_id])
    if held < 1:
        raise ApiError(
            429,
            "too_many_connections",
            f"user already has {state.settings.max_connections_per_user} open streams",
            headers={"Retry-After": "5"},
        )
    return conn_id


class StreamQuery(BaseModel):
    topic: list[str] = Field(default_factory=list, description="a topic to add (repeatable)")
    user: str | None = Field(None, description="admins: read this user's stream")
    last_event_id: str | None = Field(None, description="resume after this cursor")


STREAM_ERRORS = (
    "bad_cursor",
    "bad_topic",
    "bad_user",
    "unknown_topic",
    "topic_forbidden",
    "user_forbidden",
    "too_many_connections",
    "replay_budget_exhausted",
    "server_busy",
    "journal_unavailable",
)


@endpoint(
    "The live SSE stream: the caller's events (and topics'), resumable by cursor",
    {200: SSE},
    auth="stream",
    query=StreamQuery,
    headers={"Last-Event-ID": "resume after this cursor (EventSource sends it)"},
    errors=STREAM_ERRORS,
    tags=("subscribe",),
)
async def stream_events(request: Request) -> Response | EventStreamResponse:
    if request.method == "HEAD":
        # Answering it would need the credential (and spend a ticket) for nothing.
        raise ApiError(405, "method_not_allowed", "use GET for the event stream")
    state = state_of(request)
    settings = state.settings
    principal, via = await state.auth.identify(request, state.tickets)
    query = request.query_params
    targets = readable_targets(state, principal, query.getlist("topic"), query.get("user"))
    cursor = parse_cursor(
        request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    )
    if (ended := ended_at_once(state)) is not None:
        return ended
    refuse_beyond_process_cap(state)
    session = Session(state.journal, targets, cursor, session_limits(state))
    conn_id = await take_connection_slot(state, principal)
    # Until the stream starts, every refusal gives the slot back (and should the
    # stream never start at all, the untracked lease lapses on its own).
    try:
        await charge_if_replaying(state, principal, session)
        response = EventStreamResponse(
            _stream,
            (state, principal, session, conn_id),
            headers=SSE_HEADERS,
            send_timeout_s=settings.keepalive_s * 2,
        )
        if via == "ticket":
            # Let EventSource's own reconnects (same URL, spent ticket) back in.
            ticket = request.query_params["ticket"]
            ttl_s = max(1, int(principal.expires_at - time.time()))
            async with _journal_errors_as_503():
                secret = await state.tickets.open_session(ticket, principal.to_claims(), ttl_s)
            response.set_cookie(
                stream_cookie_name(ticket),
                secret,
                max_age=ttl_s,
                path="/api/events",
                httponly=True,
                samesite="strict",
                # Behind a TLS proxy the request itself is plain HTTP: the public
                # URL says how browsers reach us.
                secure=request.url.scheme == "https"
                or (state.settings.public_url or "").startswith("https://"),
            )
    except BaseException:
        with contextlib.suppress(Exception):
            await state.budgets.release(principal.user, conn_id)
        raise
    return response


async def _stream(
    state: AppState,
    principal: Principal,
    session: Session,
    conn_id: str,
    closer: Closer,
    emit: Emit,
) -> None:
    settings = state.settings
    expires = stream_started(state, principal, conn_id, _OPEN_SSE)
    try:
        await emit(retry_field(settings.retry_ms))
        async with state.hub.subscribe(session.channels, settings.client_queue) as sub:
            closer.attach(sub)
            if state.closing:
                return  # close_streams came after ended_at_once's look: end like the rest
            await session.open()
            counted = 0  # counted page by page, never per event
            async for chunk in session.replay():
                await emit(chunk)
                _DELIVERED_SSE.inc(session.delivered - counted)
                counted = session.delivered
            await session.live(sub, emit, settings.keepalive_s, expires, _DELIVERED_SSE)
    except (Overflowed, HubUnavailable, JournalUnavailable):
        return  # each ends this response; the client resumes from its last id
    finally:
        await stream_ended(state, principal, conn_id, _OPEN_SSE)


def stream_started(state: AppState, principal: Principal, conn_id: str, gauge: Gauge) -> float:
    """Book an SSE stream that just started; returns the loop time its token expires
    (the stream ends then, and the client reconnects with a fresh credential).
    Plain calls, not a context manager: a suspended one per open stream costs memory."""
    state.leases.track(principal.user, conn_id)
    state.open_streams += 1
    gauge.inc()
    return asyncio.get_running_loop().time() + max(0.0, principal.expires_at - time.time())


async def stream_ended(state: AppState, principal: Principal, conn_id: str, gauge: Gauge) -> None:
    """Undo ``stream_started``; gives the user's connection slot back.

    The response ends once the slot is back (so a reconnect finds it free), or after
    ``_RELEASE_WAIT_S`` when Redis is slow or gone: a stream ended because Redis
    died must not wait out a Redis timeout too.  The release goes on regardless,
    and an unreleased slot's lease expires by itself."""
    state.open_streams -= 1
    gauge.dec()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(
            asyncio.shield(state.leases.untrack(principal.user, conn_id)), _RELEASE_WAIT_S
        )


def _collect(events: list[bytes], envelope: bytes) -> bytes:
    events.append(envelope)
    return b""


class HistoryQuery(BaseModel):
    topic: list[str] = Field(default_factory=list, description="a topic to add (repeatable)")
    user: str | None = Field(None, description="admins: read this user's history")
    after: str | None = Field(None, description="the cursor to read after")
    limit: int = Field(100, ge=1, le=MAX_HISTORY_LIMIT, description="events per page")


class HistoryPage(BaseModel):
    """A page of envelopes, the cursor to read on, and any gap found."""

    events: list[dict[str, Any]]
    next_cursor: str | None
    gap: dict[str, Any] | None
    gaps: list[dict[str, Any]]


@endpoint(
    "Past events as JSON pages",
    {200: HistoryPage},
    auth="stream",
    query=HistoryQuery,
    errors=(*STREAM_ERRORS, "bad_limit"),
    tags=("subscribe",),
)
async def history(request: Request) -> Response:
    """Past events as JSON pages: ``{"events", "next_cursor", "gap", "gaps"}``."""
    state = state_of(request)
    principal = await state.principal(request)
    query = request.query_params
    targets = readable_targets(state, principal, query.getlist("topic"), query.get("user"))
    cursor = parse_cursor(request.query_params.get("after"))
    limit = whole_number(request.query_params.get("limit"), "limit", 100, 1, MAX_HISTORY_LIMIT)
    events: list[bytes] = []
    session = Session(
        state.journal,
        targets,
        cursor,
        session_limits(state, replay_page=limit, max_replay_events=limit),
        frame=lambda _cursor, envelope: _collect(events, envelope),
        stop_at_limit=True,
    )
    await charge_if_replaying(state, principal, session, from_start=True)
    try:
        await session.open(from_start=True)
        async for _ in session.replay():
            pass
    except JournalUnavailable as e:
        raise ApiError(503, e.code, "the journal is unavailable; retry shortly") from e
    _DELIVERED_HISTORY.inc(session.delivered)
    gaps = session.gap_log
    body = (
        b'{"events":['
        + b",".join(events)
        + b'],"next_cursor":'
        + orjson.dumps(session.cursor)
        + b',"gap":'
        + orjson.dumps(gaps[0] if gaps else None)
        + b',"gaps":'
        + orjson.dumps(gaps)
        + b"}"
    )
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})

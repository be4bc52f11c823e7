"""Chat message streams over HTTP: the producer API for non-Python producers and
the reconnect endpoint ``GET /api/messages/{id}/events`` (SSE, or JSON pages).

A message is visible to its owner (and admins) only; for anyone else an unknown
and a foreign message get the same opaque 404, so ids cannot be probed.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from herald.api.auth import Principal
from herald.api.errors import ApiError
from herald.api.events import (
    SSE_HEADERS,
    charge_replay,
    ended_at_once,
    refuse_beyond_process_cap,
    stream_ended,
    stream_started,
    take_connection_slot,
)
from herald.api.openapi import OBJECT, SSE, UUID_PATH, Media, endpoint
from herald.api.responses import JSONResponse
from herald.api.schemas import parse_body, read_json, whole_number
from herald.api.sse import Closer, Emit, EventStreamResponse
from herald.api.state import AppState, state_of
from herald.journal.messages.keys import channel_of, seq_key_of
from herald.journal.messages.producer import MessageStreams
from herald.journal.messages.store import (
    MessageInfo,
    MessageOwnedElsewhere,
    create_message,
    get_message,
    message_envelope,
    read_events,
    set_status,
)
from herald.journal.positions import NAME_RE
from herald.journal.runtime.db import DatabaseUnavailable
from herald.journal.runtime.metrics import ENVELOPES_DELIVERED, SSE_CONNECTIONS
from herald.journal.wire import retry_field
from herald.streams.hub_redis import HubUnavailable
from herald.streams.message_reader import MessageReader, ReaderLimits, is_terminal
from herald.streams.session import Overflowed

__all__ = ["routes"]

_PATH = "/api/messages/{id}/events"
_OPEN = SSE_CONNECTIONS.labels(endpoint=_PATH)
_DELIVERED = ENVELOPES_DELIVERED.labels(endpoint=_PATH)
MAX_BATCH = 1000
MAX_PAGE = 1000
_STORE_WAIT_S = 5.0
_CURSOR_RE = re.compile(r"-?[0-9]{1,11}")


class CreateBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    # JSON has no UUID type: strict mode would refuse the string every client sends.
    id: uuid.UUID | None = Field(None, strict=False)
    user: str | None = Field(None, pattern=NAME_RE.pattern)


class EventBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: str
    payload: dict[str, Any] = Field(default_factory=dict)


class AppendBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: str | None = None
    payload: dict[str, Any] | None = None
    events: list[EventBody] | None = Field(None, min_length=1, max_length=MAX_BATCH)

    @model_validator(mode="after")
    def _one_form(self) -> AppendBody:
        if (self.events is None) == (self.type is None):
            raise ValueError("give either 'type' (and 'payload') or 'events'")
        return self

    def pairs(self) -> list[tuple[str, dict[str, Any]]]:
        if self.events is not None:
            return [(e.type, e.payload) for e in self.events]
        return [(self.type or "", self.payload or {})]


class CompleteBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    payload: dict[str, Any] = Field(default_factory=dict)


class FailBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    code: str = Field("producer_failed", pattern=r"^[a-z][a-z0-9_]{0,63}$")
    message: str = Field("the answer failed", max_length=500)


def _streams(state: AppState) -> MessageStreams:
    if state.messages is None or state.engine is None:
        raise ApiError(
            503, "messages_unavailable", "message streams need Redis and PostgreSQL configured"
        )
    return state.messages


def _message_id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["id"])
    except ValueError:
        raise _not_found() from None


def _not_found() -> ApiError:
    return ApiError(404, "message_not_found", "no such message")


async def _readable(state: AppState, principal: Principal, message_id: uuid.UUID) -> MessageInfo:
    streams = _streams(state)
    info = await get_message(streams.engine, message_id)
    if info is None or (info.user_id != principal.user and not principal.has_any_role("admin")):
        raise _not_found()
    return info


async def _writable(state: AppState, principal: Principal, message_id: uuid.UUID) -> MessageInfo:
    info = await _readable(state, principal, message_id)
    if info.user_id != principal.user and not principal.has_any_role("admin", "service"):
        raise _not_found()
    if info.status != "streaming":
        raise ApiError(409, "message_ended", f"the message is {info.status}; nothing may follow")
    return info


# -- producer API -------------------------------------------------------------------


# What the routes that write to a message may answer besides 401 and body errors:
# refusals of the message itself, then those of the events written.
_WRITABLE_ERRORS = (
    "message_not_found",
    "role_missing",
    "messages_unavailable",
    "database_unavailable",
    "journal_unavailable",
    "message_ended",
)
_WRITE_ERRORS = (*_WRITABLE_ERRORS, "writer_overloaded", "envelope_too_large", "invalid_envelope")


@endpoint(
    "Create a chat message (200: the id exists for this owner, a continuation)",
    {201: OBJECT, 200: OBJECT},
    body=CreateBody,
    errors=("role_missing", "message_id_taken", "messages_unavailable", "database_unavailable"),
    tags=("messages",),
)
async def create(request: Request) -> Response:
    """``POST /api/messages``: a new message owned by the caller, or by ``user`` for
    a ``service`` (or ``admin``) token.  Re-posting an existing id of the same owner
    takes it up again (a continuation)."""
    state = state_of(request)
    principal = await state.principal(request)
    streams = _streams(state)
    body = parse_body(CreateBody, await read_json(request, limit=4096))
    owner = principal.user
    if body.user is not None and body.user != principal.user:
        if not principal.has_any_role("service", "admin"):
            raise ApiError(403, "role_missing", "only a service token may create for another user")
        owner = body.user
    message_id = body.id or uuid.uuid4()
    existed = await get_message(streams.engine, message_id)
    try:
        info, last = await create_message(streams.engine, message_id, owner)
    except MessageOwnedElsewhere:
        raise ApiError(409, "message_id_taken", "that message id is in use") from None
    body_out = {**info.to_json(), "last_sequence_no": last}
    return JSONResponse(body_out, status_code=200 if existed else 201)


async def _writable_message(request: Request) -> tuple[AppState, uuid.UUID]:
    """The state and the message of a write route, once the caller may write to it."""
    state = state_of(request)
    principal = await state.principal(request)
    message_id = _message_id(request)
    await _writable(state, principal, message_id)
    return state, message_id


@endpoint(
    "Append events to a message (202: live, not yet stored)",
    {201: OBJECT, 202: OBJECT},
    body=AppendBody,
    path={"id": UUID_PATH},
    errors=(*_WRITE_ERRORS, "terminal_event"),
    tags=("messages",),
)
async def append(request: Request) -> Response:
    """``POST /api/messages/{id}/events``: one event ``{"type","payload"}`` or a batch
    ``{"events": [...]}``; published live at once, answered once stored (201), or
    202 if the database is slow and they are still buffered (they will be stored)."""
    state, message_id = await _writable_message(request)
    body = parse_body(
        AppendBody, await read_json(request, limit=2 * state.settings.max_envelope_bytes + 65536)
    )
    return await _publish(state, message_id, body.pairs(), None)


@endpoint(
    "End the message with an end event",
    {201: OBJECT, 202: OBJECT},
    body=CompleteBody,
    body_required=False,
    path={"id": UUID_PATH},
    errors=_WRITE_ERRORS,
    tags=("messages",),
)
async def complete(request: Request) -> Response:
    """``POST /api/messages/{id}/complete``: the terminal ``end`` event, status complete."""
    state, message_id = await _writable_message(request)
    body = parse_body(
        CompleteBody, await _optional_json(request, state.settings.max_envelope_bytes)
    )
    return await _publish(state, message_id, [("end", body.payload)], "complete")


@endpoint(
    "End the message with an error event",
    {201: OBJECT, 202: OBJECT},
    body=FailBody,
    body_required=False,
    path={"id": UUID_PATH},
    errors=_WRITE_ERRORS,
    tags=("messages",),
)
async def fail(request: Request) -> Response:
    """``POST /api/messages/{id}/fail``: the terminal ``error`` event, status failed."""
    state, message_id = await _writable_message(request)
    body = parse_body(FailBody, await _optional_json(request, 4096))
    return await _publish(
        state, message_id, [("error", {"code": body.code, "message": body.message})], "failed"
    )


@endpoint(
    "Keep the watchdog away",
    {204: None},
    path={"id": UUID_PATH},
    errors=_WRITABLE_ERRORS,
    tags=("messages",),
)
async def heartbeat(request: Request) -> Response:
    """``POST /api/messages/{id}/heartbeat``: the producer is alive (204)."""
    state, message_id = await _writable_message(request)
    await set_status(_streams(state).engine, message_id)
    return Response(status_code=204)


async def _optional_json(request: Request, limit: int) -> Any:
    """The JSON body, or ``{}`` when there is none (``curl -X POST`` sends none)."""
    declared = request.headers.get("content-length")
    if declared in (None, "", "0") and "transfer-encoding" not in request.headers:
        return {}
    return await read_json(request, limit)


async def _publish(
    state: AppState,
    message_id: uuid.UUID,
    events: list[tuple[str, dict[str, Any]]],
    final: str | None,
) -> Response:
    streams = _streams(state)
    for i, (event_type, _) in enumerate(events):
        if event_type in ("end", "error") and (final is None or i != len(events) - 1):
            raise ApiError(
                422,
                "terminal_event",
                f"{event_type!r} ends a message: use POST …/complete or …/fail",
            )
    rows, mark = await streams.publish(message_id, events, floor=None)
    stored = await streams.writer.wait_durable(mark, _STORE_WAIT_S)
    if final is not None:
        await set_status(streams.engine, message_id, final)  # type: ignore[arg-type]
    else:
        await set_status(streams.engine, message_id)  # the producer's heartbeat
    return JSONResponse(
        {"sequence_nos": [r.seq for r in rows], "stored": stored},
        status_code=201 if stored else 202,
    )


# -- the reconnect endpoint ------------------------------------------------------------


def _cursor(request: Request) -> int:
    raw = request.headers.get("last-event-id") or request.query_params.get("after")
    if raw is None or raw == "":
        return -1
    if not _CURSOR_RE.fullmatch(raw) or int(raw) < -1:
        raise ApiError(
            400, "bad_cursor", f"cursor {raw[:40]!r} must be a sequence number (an integer ≥ -1)"
        )
    return int(raw)


def _limits(state: AppState) -> ReaderLimits:
    s = state.settings
    return ReaderLimits(
        page=s.message_page,
        flush_s=s.journal_flush_ms / 1000,
        watchdog_s=s.message_watchdog_s,
        stale_s=s.producer_stale_s,
        max_held=s.client_queue,
    )


class MessageEventsQuery(BaseModel):
    after: int | None = Field(None, ge=-1, description="the sequence number to read after")
    format: Literal["json"] | None = Field(None, description="json: JSON pages instead of SSE")
    limit: int = Field(100, ge=1, le=MAX_PAGE, description="format=json: events per page")


@endpoint(
    "The message's events after the cursor, then live (SSE), or JSON pages",
    {
        200: (SSE, Media("application/json", OBJECT, "format=json: a page of events")),
        204: None,
    },
    auth="stream",
    path={"id": UUID_PATH},
    query=MessageEventsQuery,
    headers={"Last-Event-ID": "resume after this sequence number"},
    errors=(
        "message_not_found",
        "role_missing",
        "messages_unavailable",
        "database_unavailable",
        "journal_unavailable",
        "bad_cursor",
        "bad_format",
        "bad_limit",
        "server_busy",
        "too_many_connections",
        "replay_budget_exhausted",
    ),
    tags=("messages",),
)
async def events(request: Request) -> Response | EventStreamResponse:
    """``GET /api/messages/{id}/events``: the events after the cursor, then live."""
    state = state_of(request)
    principal = await state.principal(request)
    message_id = _message_id(request)
    after = _cursor(request)
    info = await _readable(state, principal, message_id)
    streams = _streams(state)
    form = request.query_params.get("format")
    if form == "json":
        return await _json_page(request, state, principal, message_id, after, info)
    if form is not None:
        raise ApiError(
            400, "bad_format", f"format must be 'json' (or left out for SSE), not {form[:40]!r}"
        )
    if "limit" in request.query_params:
        raise ApiError(400, "bad_limit", "limit applies to format=json pages only")
    refuse_beyond_process_cap(state)
    ahead = await read_events(streams.engine, message_id, after, 1)
    if info.status != "streaming" and not ahead:
        # Nothing more will come: 204 tells EventSource to stop reconnecting.
        return Response(status_code=204, headers={"Cache-Control": "no-store"})
    if (ended := ended_at_once(state)) is not None:
        return ended
    if ahead:
        # Past events to deliver: a replay, charged like one of a user stream.
        await charge_replay(state, principal)
    conn_id = await take_connection_slot(state, principal)

    async def latest() -> int:
        try:
            raw = await streams.redis.get(seq_key_of(message_id))
        except RedisError:
            return -1  # unknown: live messages and holes still drive the reader
        return -1 if raw is None else int(raw)

    reader = MessageReader(streams.engine, message_id, after, _limits(state), latest)
    return EventStreamResponse(
        _stream,
        (state, principal, reader, conn_id),
        headers=SSE_HEADERS,
        send_timeout_s=state.settings.keepalive_s * 2,
    )


async def _stream(
    state: AppState,
    principal: Principal,
    reader: MessageReader,
    conn_id: str,
    closer: Closer,
    emit: Emit,
) -> None:
    settings = state.settings
    expires = stream_started(state, principal, conn_id, _OPEN)
    try:
        await emit(retry_field(settings.retry_ms))
        channel = channel_of(reader.message_id)
        async with state.hub.subscribe([channel], settings.client_queue) as sub:
            closer.attach(sub)
            if state.closing:
                return  # close_streams came after ended_at_once's look: end like the rest
            await reader.run(sub, emit, settings.keepalive_s, expires)
    except (Overflowed, HubUnavailable, DatabaseUnavailable):
        return  # the client resumes from its last id
    finally:
        _DELIVERED.inc(reader.delivered)
        await stream_ended(state, principal, conn_id, _OPEN)


async def _json_page(
    request: Request,
    state: AppState,
    principal: Principal,
    message_id: uuid.UUID,
    after: int,
    info: MessageInfo,
) -> Response:
    streams = _streams(state)
    limit = whole_number(request.query_params.get("limit"), "limit", 100, 1, MAX_PAGE)
    ahead = await read_events(streams.engine, message_id, after, 1)
    if ahead:
        await charge_replay(state, principal)  # a history read is a replay
    rows = await read_events(streams.engine, message_id, after, limit)
    envelopes: list[bytes] = []
    last, ended = after, False
    for row in rows:
        if row.seq != last + 1:
            break  # not flushed yet: the next page starts here
        env = message_envelope(
            message_id, row.seq, row.event_type, row.payload_json, row.created_at
        )
        envelopes.append(env)
        last = row.seq
        if is_terminal(env):
            ended = True
            break
    body = (
        b'{"events":['
        + b",".join(envelopes)
        + b'],"next_after":'
        + orjson.dumps(last)
        + b',"ended":'
        + orjson.dumps(ended)
        + b',"message":'
        + orjson.dumps(info.to_json())
        + b"}"
    )
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


routes = [
    Route("/api/messages", create, methods=["POST"]),
    Route("/api/messages/{id}/events", append, methods=["POST"]),
    Route("/api/messages/{id}/events", events, methods=["GET"]),
    Route("/api/messages/{id}/complete", complete, methods=["POST"]),
    Route("/api/messages/{id}/fail", fail, methods=["POST"]),
    Route("/api/messages/{id}/heartbeat", heartbeat, methods=["POST"]),
]

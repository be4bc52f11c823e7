"""Page events over HTTP: admins define, per page route, an event (a filter set, a
limit, an active window); any signed-in page asks which one applies now.

``GET /api/page-events/current`` reads the route from ``X-Page-Route`` (or
``?route=`` for clients that cannot set headers): ``200 null`` without a route or
when nothing applies, ``200`` with the event, ``409 ambiguous_page_event`` with
the uids when several apply.  Every change, and every window opening or closing,
is published as ``page_event.changed`` on topic ``page-events``: a page re-resolves
on it instead of polling.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from herald.api.auth import require_role
from herald.api.errors import ApiError
from herald.api.openapi import UUID_PATH, endpoint
from herald.api.responses import JSONResponse
from herald.api.schemas import parse_body, read_json, whole_number
from herald.api.sources import database_errors_as_503
from herald.api.state import AppState, state_of
from herald.api.uploads import parse_id
from herald.journal.page_events import (
    Ambiguous,
    PageEvent,
    PageEventFilters,
    PageEvents,
    change_data,
    publish_change,
    resolve,
)
from herald.journal.page_events.filters import unknown_fields

__all__ = ["PageEventBody", "PageEventOut", "PageEventsPage", "routes"]

log = logging.getLogger("herald.page_events")

MAX_BODY_BYTES = 64 * 1024
MAX_ROUTE = 500
MAX_LIST = 1000
ROUTE_HEADER = "x-page-route"
_NOT_FOUND = ApiError(404, "page_event_not_found", "no page event with this uid")


def _no_control(value: str | None) -> str | None:
    if value is not None and any(c < " " or c == "\x7f" for c in value):
        raise ValueError("control characters are not allowed")
    return value


class PageEventBody(BaseModel):
    """``POST /api/page-events`` and ``PUT /api/page-events/{uid}`` (a full replacement).
    Dates are RFC 3339 with an offset (a naive one is refused); a missing date is an
    unbounded window end.  The window is ``[start_date, end_date)``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(None, max_length=4000)
    page_context: str = Field(min_length=1, max_length=MAX_ROUTE)
    filters: PageEventFilters = PageEventFilters.model_validate({})
    limit: StrictInt | None = Field(None, ge=1, le=1_000_000)
    is_active: StrictBool = True
    start_date: AwareDatetime | None = None
    end_date: AwareDatetime | None = None

    _names = field_validator("name", "page_context")(_no_control)

    @field_validator("start_date", "end_date", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError("give an RFC 3339 date-time string with an offset")
        return value

    @model_validator(mode="after")
    def _window(self) -> PageEventBody:
        if self.start_date and self.end_date and self.start_date >= self.end_date:
            raise ValueError("start_date must be before end_date")
        return self

    def fields(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "page_context": self.page_context,
            "filters": self.filters.stored(),
            "limit": self.limit,
            "is_active": self.is_active,
            "start_date": self.start_date.astimezone(UTC) if self.start_date else None,
            "end_date": self.end_date.astimezone(UTC) if self.end_date else None,
        }


class PageEventOut(BaseModel):
    uid: uuid.UUID
    name: str
    description: str | None
    page_context: str
    filters: dict[str, Any]
    limit: int | None
    is_active: bool
    start_date: datetime | None
    end_date: datetime | None
    created_by: str
    created_at: datetime
    updated_at: datetime


class PageEventsPage(BaseModel):
    events: list[PageEventOut]


class CurrentPageEvent(RootModel[PageEventOut | None]):
    """The event that applies now, or ``null``."""


class PageEventsQuery(BaseModel):
    page_context: str | None = Field(None, description="only the events of this route")
    active: Literal["true", "false"] | None = Field(None, description="by the is_active flag")
    limit: int = Field(500, ge=1, le=MAX_LIST, description="events per page")
    offset: int = Field(0, ge=0, le=10**9, description="events to skip")


class CurrentQuery(BaseModel):
    route: str | None = Field(
        None, max_length=MAX_ROUTE, description="the page route, when X-Page-Route cannot be set"
    )


_ADMIN_ERRORS = ("role_missing", "database_unavailable", "database_busy")
_ROUTE_HEADERS = {"X-Page-Route": "the page route the caller shows (wins over ?route=)"}


def _service(state: AppState) -> PageEvents:
    if state.page_events is None:
        raise ApiError(
            503, "database_unavailable", "page events need PostgreSQL; none is configured"
        )
    return state.page_events


async def _admin(request: Request) -> PageEvents:
    state = state_of(request)
    require_role(await state.principal(request), "admin")
    return _service(state)


async def _body(request: Request) -> PageEventBody:
    raw = await read_json(request, MAX_BODY_BYTES)
    filters = raw.get("filters") if isinstance(raw, dict) else None
    if isinstance(filters, dict) and (unknown := unknown_fields(filters)):
        known = ", ".join(sorted(PageEventFilters.model_fields))
        raise ApiError(
            422,
            "unknown_filter_fields",
            f"unknown filter fields: {', '.join(unknown)} (known: {known})",
            extra={"fields": unknown},
        )
    return parse_body(PageEventBody, raw)


async def _announce(request: Request, data: dict[str, Any]) -> None:
    """After a committed change: every process's cache forgets, the watcher re-plans,
    and subscribers hear of it."""
    state = state_of(request)
    service = _service(state)
    try:
        await service.changed(data["page_context"], data.get("previous_page_context"))
    except (RedisError, OSError) as e:
        # The row changed; other processes may answer /current from their cache until
        # their next lookup that reaches Redis.
        log.error("page event %s: cache invalidation failed: %s", data["uid"], e)
    await publish_change(state.journal, data)


@endpoint(
    "Define a page event (admin)",
    {201: PageEventOut},
    body=PageEventBody,
    errors=("unknown_filter_fields", *_ADMIN_ERRORS),
    tags=("page events",),
)
async def create_event(request: Request) -> Response:
    """Admin: define an event → 201 with it."""
    state = state_of(request)
    principal = await state.principal(request)
    require_role(principal, "admin")
    service = _service(state)
    body = await _body(request)
    async with database_errors_as_503():
        event = await service.store.create(body.fields(), principal.user)
    await _announce(request, change_data(event.uid, event.page_context, "created"))
    return JSONResponse(event.to_json(), status_code=201)


def _flag(raw: str | None, name: str) -> bool | None:
    if raw is None:
        return None
    if raw not in ("true", "false"):
        raise ApiError(400, "bad_filter", f"{name} must be true or false")
    return raw == "true"


@endpoint(
    "Page events by route, newest first (admin)",
    {200: PageEventsPage},
    query=PageEventsQuery,
    errors=("bad_filter", "bad_limit", "bad_offset", *_ADMIN_ERRORS),
    tags=("page events",),
)
async def list_events(request: Request) -> Response:
    """Admin: ``?page_context=ROUTE``, ``?active=true|false`` (the ``is_active`` flag),
    ``?limit=`` (1..1000, default 500), ``?offset=``; by route, newest first."""
    service = await _admin(request)
    found = await _guarded(
        service.store.list_events(
            page_context=request.query_params.get("page_context"),
            active=_flag(request.query_params.get("active"), "active"),
            limit=whole_number(request.query_params.get("limit"), "limit", 500, 1, MAX_LIST),
            offset=whole_number(request.query_params.get("offset"), "offset", 0, 0, 10**9),
        )
    )
    return JSONResponse({"events": [e.to_json() for e in found]})


async def _guarded(work: Any) -> Any:
    async with database_errors_as_503():
        return await work


@endpoint(
    "One page event (admin)",
    {200: PageEventOut},
    path={"uid": UUID_PATH},
    errors=("page_event_not_found", *_ADMIN_ERRORS),
    tags=("page events",),
)
async def get_event(request: Request) -> Response:
    service = await _admin(request)
    uid = parse_id(request.path_params["uid"], _NOT_FOUND)
    event = await _guarded(service.store.get(uid))
    if event is None:
        raise _NOT_FOUND
    return JSONResponse(event.to_json())


@endpoint(
    "Replace a page event (admin)",
    {200: PageEventOut},
    body=PageEventBody,
    path={"uid": UUID_PATH},
    errors=("page_event_not_found", "unknown_filter_fields", *_ADMIN_ERRORS),
    tags=("page events",),
)
async def replace_event(request: Request) -> Response:
    """Admin: replace every field (what is left out takes its default)."""
    service = await _admin(request)
    uid = parse_id(request.path_params["uid"], _NOT_FOUND)
    body = await _body(request)
    found = await _guarded(service.store.replace(uid, body.fields()))
    if found is None:
        raise _NOT_FOUND
    before, after = found
    data = change_data(after.uid, after.page_context, "updated", before.page_context)
    await _announce(request, data)
    return JSONResponse(after.to_json())


@endpoint(
    "Delete a page event (admin)",
    {204: None},
    path={"uid": UUID_PATH},
    errors=("page_event_not_found", *_ADMIN_ERRORS),
    tags=("page events",),
)
async def delete_event(request: Request) -> Response:
    service = await _admin(request)
    uid = parse_id(request.path_params["uid"], _NOT_FOUND)
    event: PageEvent | None = await _guarded(service.store.delete(uid))
    if event is None:
        raise _NOT_FOUND
    await _announce(request, change_data(event.uid, event.page_context, "deleted"))
    return Response(status_code=204)


@endpoint(
    "The page event that applies to a route now, or null",
    {200: CurrentPageEvent},
    query=CurrentQuery,
    headers=_ROUTE_HEADERS,
    errors=("bad_route", "ambiguous_page_event", "database_unavailable", "database_busy"),
    tags=("page events",),
)
async def current_event(request: Request) -> Response:
    """Any credential: the event that applies to the page's route now, or null."""
    state = state_of(request)
    await state.principal(request)
    given = (request.headers.get(ROUTE_HEADER), request.query_params.get("route"))
    if any(r is not None and len(r) > MAX_ROUTE for r in given):
        raise ApiError(400, "bad_route", f"a page route has at most {MAX_ROUTE} characters")
    route = given[0] or given[1] or ""
    headers = {"Cache-Control": "no-store"}
    if not route:
        return JSONResponse(None, headers=headers)
    service = _service(state)
    candidates = await _guarded(service.cache.candidates(route))
    try:
        event = resolve(route, candidates, datetime.now(UTC))
    except Ambiguous as e:
        raise ApiError(
            409, e.code, str(e), extra={"uids": [str(u) for u in e.uids]}, headers=headers
        ) from e
    return JSONResponse(None if event is None else event.to_json(), headers=headers)


routes = [
    Route("/api/page-events", create_event, methods=["POST"]),
    Route("/api/page-events", list_events, methods=["GET"]),
    Route("/api/page-events/current", current_event, methods=["GET"]),
    Route("/api/page-events/{uid}", get_event, methods=["GET"]),
    Route("/api/page-events/{uid}", replace_event, methods=["PUT"]),
    Route("/api/page-events/{uid}", delete_event, methods=["DELETE"]),
]

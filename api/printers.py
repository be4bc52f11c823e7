"""Printer routes: register, list, change and remove printers (admins), and read
their cached status (anyone who may read the ``printers`` topic).

A printer's id is derived from its model, host and port
(``herald.journal.printers.spec``): registering the same printer again answers
200 with the same id and updates its name and community.  Model, host and port
are the identity, so PATCH changes only the name and community.  The status is
read from the probe's cache, never from the printer.  The SNMP community is a
credential: only admins see it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from herald.api.auth import Principal, require_role
from herald.api.errors import ApiError
from herald.api.events import readable_targets
from herald.api.openapi import UUID_PATH, endpoint
from herald.api.printer_status import PrinterStatusOut, status_of
from herald.api.responses import JSONResponse
from herald.api.schemas import parse_body, read_json
from herald.api.sources import database_errors_as_503
from herald.api.state import AppState, state_of
from herald.api.uploads import parse_id
from herald.journal.envelope import format_time
from herald.journal.printers import store
from herald.journal.printers.keys import TOPIC
from herald.journal.printers.spec import PrinterSpec, printable, printable_label
from herald.journal.runtime.db import run_in_transaction

__all__ = [
    "PrinterCreate",
    "PrinterListOut",
    "PrinterOut",
    "PrinterStatusListOut",
    "PrinterUpdate",
    "routes",
]

MAX_BODY_BYTES = 16 * 1024
IDENTITY_FIELDS = ("model", "host", "port")
_NOT_FOUND = ApiError(404, "printer_not_found", "no printer with this id")


class PrinterCreate(PrinterSpec):
    """``POST /api/printers``: ``{name, model, host, port?=161, community?="public"}``.
    Any host is accepted, private and loopback addresses included."""


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # "default: null" on a string field is not valid JSON Schema


class PrinterUpdate(BaseModel):
    """``PATCH /api/printers/{id}``: the fields that are not the printer's identity."""

    model_config = ConfigDict(extra="forbid", strict=True)

    # Left out: unchanged. Not nullable: null would reach the checks below.
    name: str = Field(None, min_length=1, max_length=200, json_schema_extra=_no_default)  # type: ignore[assignment]
    community: str = Field(None, min_length=1, max_length=255, json_schema_extra=_no_default)  # type: ignore[assignment]

    # The same rules as at registration.
    _name = field_validator("name")(printable_label)
    _community = field_validator("community")(printable)


class PrinterOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    model: str
    host: str
    port: int
    community: str | None  # admins only; null for everyone else
    created_at: str
    updated_at: str
    status_url: str


class PrinterListOut(BaseModel):
    printers: list[PrinterOut]


class PrinterStatusListOut(BaseModel):
    """``GET /api/printers/status``: every printer's cached status (for boards)."""

    printers: list[PrinterStatusOut]


def _engine(state: AppState) -> AsyncEngine:
    if state.engine is None:
        raise ApiError(503, "database_unavailable", "printers need a database; none is configured")
    return state.engine


async def _reader(request: Request) -> tuple[AppState, Principal]:
    """Admins, and whoever may read the ``printers`` topic (``HERALD_TOPICS``)."""
    state = state_of(request)
    principal = await state.principal(request)
    readable_targets(state, principal, [TOPIC])
    return state, principal


async def _admin(request: Request) -> AppState:
    state = state_of(request)
    require_role(await state.principal(request), "admin")
    return state


def _out(printer: store.Printer, principal_is_admin: bool) -> dict[str, Any]:
    return PrinterOut(
        id=str(printer.id),
        name=printer.name,
        model=printer.model,
        host=printer.host,
        port=printer.port,
        community=printer.community if principal_is_admin else None,
        created_at=format_time(printer.created_at),
        updated_at=format_time(printer.updated_at),
        status_url=f"/api/printers/{printer.id}/status",
    ).model_dump()


async def _run(engine: AsyncEngine, work: Any) -> Any:
    async with database_errors_as_503():
        return await run_in_transaction(engine, work)


@endpoint(
    "Register a printer (admin); 200 when it exists already",
    {201: PrinterOut, 200: PrinterOut},
    body=PrinterCreate,
    errors=(
        "role_missing",
        "database_unavailable",
        "database_busy",
    ),
    tags=("printers",),
)
async def create_printer(request: Request) -> Response:
    """Register a printer → 201, or 200 with the same id when it was registered."""
    state = await _admin(request)
    spec = parse_body(PrinterCreate, await read_json(request, MAX_BODY_BYTES))

    async def work(conn: AsyncConnection) -> tuple[store.Printer, bool]:
        return await store.upsert_printer(conn, spec)

    printer, created = await _run(_engine(state), work)
    return JSONResponse(_out(printer, True), status_code=201 if created else 200)


@endpoint(
    "The printers",
    {200: PrinterListOut},
    errors=(
        "role_missing",
        "database_unavailable",
        "database_busy",
    ),
    tags=("printers",),
)
async def list_printers(request: Request) -> Response:
    state, principal = await _reader(request)
    found = await _run(_engine(state), store.list_printers)
    admin = principal.has_any_role("admin")
    return JSONResponse({"printers": [_out(p, admin) for p in found]})


@endpoint(
    "One printer",
    {200: PrinterOut},
    path={"printer_id": UUID_PATH},
    errors=("role_missing", "database_unavailable", "database_busy", "printer_not_found"),
    tags=("printers",),
)
async def get_printer(request: Request) -> Response:
    state, principal = await _reader(request)
    printer_id = parse_id(request.path_params["printer_id"], _NOT_FOUND)

    async def work(conn: AsyncConnection) -> store.Printer | None:
        return await store.get_printer(conn, printer_id)

    printer = await _run(_engine(state), work)
    if printer is None:
        raise _NOT_FOUND
    return JSONResponse(_out(printer, principal.has_any_role("admin")))


@endpoint(
    "Rename a printer or change its community (admin)",
    {200: PrinterOut},
    body=PrinterUpdate,
    path={"printer_id": UUID_PATH},
    errors=(
        "role_missing",
        "database_unavailable",
        "database_busy",
        "printer_not_found",
        "printer_identity_immutable",
    ),
    tags=("printers",),
)
async def update_printer(request: Request) -> Response:
    state = await _admin(request)
    printer_id = parse_id(request.path_params["printer_id"], _NOT_FOUND)
    raw = await read_json(request, MAX_BODY_BYTES)
    if isinstance(raw, dict) and (fixed := [f for f in IDENTITY_FIELDS if f in raw]):
        raise ApiError(
            422,
            "printer_identity_immutable",
            f"{', '.join(fixed)} cannot change: model, host and port are the printer's "
            "identity; register it at its new address (POST /api/printers) and delete this one",
        )
    changes = parse_body(PrinterUpdate, raw).model_dump(exclude_none=True)

    async def work(conn: AsyncConnection) -> store.Printer | None:
        return await store.update_printer(conn, printer_id, changes)

    printer = await _run(_engine(state), work)
    if printer is None:
        raise _NOT_FOUND
    return JSONResponse(_out(printer, True))


@endpoint(
    "Remove a printer (admin)",
    {204: None},
    path={"printer_id": UUID_PATH},
    errors=("role_missing", "database_unavailable", "database_busy", "printer_not_found"),
    tags=("printers",),
)
async def delete_printer(request: Request) -> Response:
    state = await _admin(request)
    printer_id = parse_id(request.path_params["printer_id"], _NOT_FOUND)

    async def work(conn: AsyncConnection) -> bool:
        return await store.delete_printer(conn, printer_id)

    if not await _run(_engine(state), work):
        raise _NOT_FOUND
    return Response(status_code=204)


@endpoint(
    "A printer's status from the probe's cache",
    {200: PrinterStatusOut},
    path={"printer_id": UUID_PATH},
    errors=("role_missing", "database_unavailable", "database_busy", "printer_not_found"),
    tags=("printers",),
)
async def printer_status(request: Request) -> Response:
    """The cached status of one printer; answers from PostgreSQL only."""
    state, _ = await _reader(request)
    printer_id: uuid.UUID = parse_id(request.path_params["printer_id"], _NOT_FOUND)

    async def work(conn: AsyncConnection) -> Any:
        return await store.read_status(conn, printer_id)

    found = await _run(_engine(state), work)
    if found is None:
        raise _NOT_FOUND
    printer, row = found
    return JSONResponse(status_of(printer, row, datetime.now(UTC)).model_dump())


@endpoint(
    "Every printer's cached status",
    {200: PrinterStatusListOut},
    errors=(
        "role_missing",
        "database_unavailable",
        "database_busy",
    ),
    tags=("printers",),
)
async def all_statuses(request: Request) -> Response:
    """Every printer's cached status, by name: what a printers board shows."""
    state, _ = await _reader(request)
    rows = await _run(_engine(state), store.list_statuses)
    now = datetime.now(UTC)
    return JSONResponse({"printers": [status_of(p, row, now).model_dump() for p, row in rows]})


routes = [
    Route("/api/printers", create_printer, methods=["POST"]),
    Route("/api/printers", list_printers, methods=["GET"]),
    Route("/api/printers/status", all_statuses, methods=["GET"]),
    Route("/api/printers/{printer_id}", get_printer, methods=["GET"]),
    Route("/api/printers/{printer_id}", update_printer, methods=["PATCH"]),
    Route("/api/printers/{printer_id}", delete_printer, methods=["DELETE"]),
    Route("/api/printers/{printer_id}/status", printer_status, methods=["GET"]),
]

"""HTTP routes of the publish half: publish, tickets, whoami; plus the operations routes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from herald.api.attachments import routes as attachment_routes
from herald.api.auth import require_role
from herald.api.docs import docs_routes
from herald.api.events import history, stream_events
from herald.api.health import health_routes
from herald.api.maintenance import routes as maintenance_routes
from herald.api.members.routes import routes as member_routes
from herald.api.messages import routes as message_routes
from herald.api.oauth import routes as oauth_routes
from herald.api.openapi import Media, endpoint
from herald.api.page_events import routes as page_event_routes
from herald.api.printers import routes as printer_routes
from herald.api.responses import JSONResponse
from herald.api.schemas import PublishBody, parse_body, read_json
from herald.api.scripts import routes as script_routes
from herald.api.sources import routes as source_routes
from herald.api.state import state_of
from herald.api.tasks import routes as task_routes
from herald.journal.envelope import format_time

__all__ = ["routes"]

STATIC = Path(__file__).resolve().parent / "static"


class Published(BaseModel):
    """The envelope's position; ``duplicate``: an idempotency key seen before."""

    id: str
    stream: str
    epoch: str | int
    duplicate: bool


@endpoint(
    "Publish one envelope to a user's stream or a topic (roles admin, service)",
    {201: Published, 200: Published},
    body=PublishBody,
    errors=("role_missing", "envelope_too_large", "invalid_envelope", "journal_unavailable"),
    tags=("publish",),
)
async def publish(request: Request) -> Response:
    """Publish one envelope for curl and non-Python producers (roles admin or service)."""
    state = state_of(request)
    require_role(await state.principal(request), "admin", "service")
    # The body wraps the envelope's data, so allow room for the wrapper around it.
    raw = await read_json(request, limit=2 * state.settings.max_envelope_bytes + 4096)
    body = parse_body(PublishBody, raw)
    # EnvelopeTooLarge, InvalidEnvelope and JournalUnavailable map to 413/422/503 by code.
    result = await state.journal.publish(
        body.target,
        body.type,
        body.data,
        source=body.source,
        idempotency_key=body.idempotency_key,
    )
    return JSONResponse(
        {
            "id": str(result.id),
            "stream": str(result.target),
            "epoch": result.epoch,
            "duplicate": result.duplicate,
        },
        status_code=200 if result.duplicate else 201,
    )


class Ticket(BaseModel):
    """A ticket to use once as ``?ticket=`` on an SSE GET."""

    ticket: str
    expires_in: int


@endpoint(
    "A single-use ticket for EventSource(url + '?ticket=…')",
    {201: Ticket},
    errors=("journal_unavailable",),
    tags=("subscribe",),
)
async def issue_ticket(request: Request) -> Response:
    """A single-use ticket for ``EventSource(url + '?ticket=…')``, valid a few seconds."""
    state = state_of(request)
    principal = await state.principal(request)
    ticket = await state.tickets.issue(principal.to_claims())
    return JSONResponse({"ticket": ticket, "expires_in": state.tickets.ttl_s}, status_code=201)


class WhoAmI(BaseModel):
    """The credential's user, roles and expiry (RFC 3339 UTC)."""

    user: str
    roles: list[str]
    expires_at: str


@endpoint("The caller as Herald sees it", {200: WhoAmI}, auth="stream", tags=("publish",))
async def whoami(request: Request) -> Response:
    """The caller as Herald sees it: handy to check a token, cookie or ticket."""
    principal = await state_of(request).principal(request)
    return JSONResponse(
        {
            "user": principal.user,
            "roles": sorted(principal.roles),
            "expires_at": format_time(datetime.fromtimestamp(principal.expires_at, UTC)),
        }
    )


@endpoint("The live page", {200: Media("text/html")}, auth="none", tags=("pages",))
async def index(request: Request) -> Response:
    """The live page: static HTML + vanilla JS, no build step."""
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


routes = [
    Route("/", index, methods=["GET"]),
    *script_routes,
    Route("/api/events", stream_events, methods=["GET"]),
    Route("/api/events/history", history, methods=["GET"]),
    Route("/api/publish", publish, methods=["POST"]),
    Route("/api/events/ticket", issue_ticket, methods=["POST"]),
    Route("/api/whoami", whoami, methods=["GET"]),
    *health_routes,
    *docs_routes,
    *message_routes,
    *task_routes,
    *oauth_routes,
    *source_routes,
    *attachment_routes,
    *member_routes,
    *printer_routes,
    *maintenance_routes,
    *page_event_routes,
]

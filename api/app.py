"""The ASGI application.  Clients are built once in the lifespan and passed down."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from herald.api.auth import Authenticator
from herald.api.crosssite import RefuseCrossSite
from herald.api.errors import exception_handlers, render_error
from herald.api.events import EVENTS_PATH, stream_events
from herald.api.middleware import (
    HEADER,
    REQUEST_ID,
    ObserveRequests,
    count_request,
    request_id_of,
)
from herald.api.routes import routes
from herald.api.state import AppState, open_state
from herald.journal.runtime.settings import Settings

__all__ = ["Herald", "create_app"]


class Herald:
    """ASGI entry point: ``GET /api/events`` on a short path, the rest through Starlette.

    A stream keeps its whole call stack alive for as long as it is open; behind
    Starlette's middleware and routing that stack was ~10 coroutines and closures
    per idle connection (see bench/README.md, fanout.py). The endpoint itself is
    the same Starlette-style handler, with errors rendered by the same handlers.
    """

    def __init__(self, app: Starlette, settings: Settings) -> None:
        self.app = app
        self.state = app.state
        guarded = RefuseCrossSite(app, cookie=settings.auth_cookie, public_url=settings.public_url)
        self.observed = ObserveRequests(guarded)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == EVENTS_PATH:
            # Request id and count inline: ObserveRequests' send wrapper would be kept
            # alive by every open stream.
            request_id = request_id_of(scope)
            bound = REQUEST_ID.set(request_id)
            scope["app"] = self.app
            request = Request(scope, receive)
            try:
                response = await stream_events(request)
            except Exception as exc:
                response = await render_error(request, exc)
            # The parsed request (query, headers, cookies) is not needed while the
            # stream runs, and this frame lives as long as the stream.
            del request
            status = getattr(response, "status_code", 200)
            if status != 200:
                # Not on the stream itself: its header list is shared by every stream
                # (a copy would be kept per connection), and EventSource cannot read it.
                response.raw_headers = [*response.raw_headers, (HEADER, request_id.encode())]
            else:
                # Nor in the context the stream lives in: that entry cost ~0.2 KiB per
                # idle connection (bench/fanout.py).  Everything that could fail and log
                # has run; the stream's access line goes without it.
                REQUEST_ID.reset(bound)
            count_request(EVENTS_PATH, "GET", status)
            del request_id, bound  # this frame lives as long as the stream
            await response(scope, receive, send)
            return
        await self.observed(scope, receive, send)


def create_app(
    settings: Settings, *, auth: Authenticator | None = None, state: AppState | None = None
) -> Herald:
    """Build the app.  Pass ``state`` to inject ready clients (tests); otherwise the
    lifespan builds them from ``settings`` and closes them on shutdown."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if state is not None:
            yield
            return
        async with open_state(settings, auth or Authenticator(settings)) as built:
            app.state.herald = built
            # Everything imported and built so far lives as long as the process.
            # Freezing it keeps each full collection from re-walking ~100k startup
            # objects (~70 ms of stalled event loop each time, every ~17k replayed
            # events); see bench/README.md, replay.py.
            gc.collect()
            gc.freeze()
            yield

    app = Starlette(routes=routes, exception_handlers=exception_handlers, lifespan=lifespan)
    if state is not None:
        # Injected clients are usable at once, even by ASGI test transports that
        # do not run the lifespan.
        app.state.herald = state
    return Herald(app, settings)

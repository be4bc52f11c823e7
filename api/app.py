"""The Starlette application.  Clients are built once in the lifespan and passed down."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from api.auth import Authenticator
from api.errors import exception_handlers
from api.routes import routes
from api.state import AppState, open_state
from journal.settings import Settings

__all__ = ["create_app"]


def create_app(
    settings: Settings, *, auth: Authenticator | None = None, state: AppState | None = None
) -> Starlette:
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
    return app

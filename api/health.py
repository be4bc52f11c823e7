"""Operations routes: ``/healthz`` (liveness), ``/readiness`` (deep checks), ``/metrics``.

``/healthz`` touches nothing but this process: it answers while Redis and
PostgreSQL are down, so an orchestrator restarts a process only when the process
itself is stuck.  ``/readiness`` runs ``state.readiness`` (see ``herald.api.readiness``)
and answers 503 when a critical dependency fails.  ``/metrics`` is the Prometheus
text exposition of ``herald.journal.runtime.metrics`` for this process.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from herald.api.openapi import OBJECT, Media, endpoint
from herald.api.responses import NO_STORE, JSONResponse
from herald.api.state import state_of
from herald.journal.envelope import format_time

__all__ = ["VERSION", "health_routes"]

VERSION = "0.1.0"


@endpoint(
    "Liveness: touches neither Redis nor PostgreSQL",
    {200: OBJECT},
    auth="none",
    tags=("operations",),
)
async def healthz(request: Request) -> Response:
    """Liveness: answers without touching Redis or PostgreSQL."""
    started_at = state_of(request).started_at
    return JSONResponse(
        {
            "status": "ok",
            "version": VERSION,
            "started_at": format_time(datetime.fromtimestamp(started_at, UTC)),
            "uptime_s": round(time.time() - started_at, 3),
        },
        headers=NO_STORE,
    )


@endpoint(
    "Deep checks: 200 ready or degraded, 503 not_ready",
    {200: OBJECT, 503: OBJECT},
    auth="none",
    tags=("operations",),
)
async def readiness(request: Request) -> Response:
    """Deep checks: 200 ``ready`` or ``degraded``, 503 ``not_ready``."""
    state = state_of(request)
    report = await state.readiness.run(state)
    return JSONResponse(report.to_json(), status_code=report.http_status, headers=NO_STORE)


@endpoint(
    "Prometheus metrics of this process",
    {200: Media("text/plain")},
    auth="none",
    tags=("operations",),
)
async def metrics(_: Request) -> Response:
    """Prometheus text format, this process's counters only."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST, headers=NO_STORE)


health_routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readiness", readiness, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]

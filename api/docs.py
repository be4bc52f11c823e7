"""``GET /openapi.json`` and ``GET /docs``: the API contract and a page that reads it.

The page is one static file with its own small renderer (no CDN, no build step),
so it works on a machine without internet access.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from herald.api.health import VERSION
from herald.api.openapi import Media, endpoint, openapi_document
from herald.api.responses import NO_STORE, JSONResponse

__all__ = ["docs_routes"]

_PAGE = Path(__file__).resolve().parent / "static" / "docs.html"


@endpoint(
    "This document: the OpenAPI 3.1 contract of every route",
    {200: Media("application/json", {"type": "object"}, "The OpenAPI document")},
    auth="none",
    tags=("meta",),
)
async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi_document(request.app.routes, VERSION), headers=NO_STORE)


@endpoint(
    "The API reference page (renders /openapi.json, works offline)",
    {200: Media("text/html", {"type": "string"}, "An HTML page")},
    auth="none",
    tags=("meta",),
)
async def docs(_: Request) -> Response:
    return FileResponse(_PAGE, media_type="text/html", headers=NO_STORE)


docs_routes = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
]

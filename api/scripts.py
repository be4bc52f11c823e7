"""The browser client ``/herald.js`` and the live page's boards ``/boards/<name>.js``.

ES modules served as they are in the repository (no build step).  They change
only when Herald is upgraded, under the same URL, so browsers may keep them but
must revalidate (``no-cache``); the ETag makes that a 304.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from herald.api.errors import ApiError

__all__ = ["SCRIPT_HEADERS", "routes"]

STATIC = Path(__file__).resolve().parent / "static"
SCRIPT_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
_MEDIA_TYPE = "text/javascript; charset=utf-8"
_BOARD_RE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")


async def _script(request: Request, path: Path) -> Response:
    try:
        body = await anyio.Path(path).read_bytes()
    except FileNotFoundError as e:
        raise ApiError(404, "not_found", f"no script {request.url.path}") from e
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {**SCRIPT_HEADERS, "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=_MEDIA_TYPE, headers=headers)


async def herald_js(request: Request) -> Response:
    """The browser client (clients/js/herald.js in the repository)."""
    return await _script(request, STATIC / "herald.js")


async def board(request: Request) -> Response:
    """One tab of the live page: an ES module exporting ``mount(container, ctx)``."""
    name = request.path_params["name"]
    if not _BOARD_RE.fullmatch(name):
        raise ApiError(404, "not_found", f"no board {name!r}")
    return await _script(request, STATIC / "boards" / f"{name}.js")


routes = [
    Route("/herald.js", herald_js, methods=["GET"]),
    Route("/boards/{name}.js", board, methods=["GET"]),
]

"""The one JSON response class every route answers with (errors included)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse as _StarletteJSON

__all__ = ["NO_STORE", "JSONResponse"]

NO_STORE = {"Cache-Control": "no-store"}


class JSONResponse(_StarletteJSON):
    """``JSONResponse(content, status_code=200, headers=None)``, serialised with orjson
    (UTC datetimes, UUIDs and dataclasses as orjson writes them)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)

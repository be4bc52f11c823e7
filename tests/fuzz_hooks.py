"""schemathesis hooks for the OpenAPI fuzz (loaded through ``SCHEMATHESIS_HOOKS``).

Every request carries an admin token signed with ``HERALD_JWT_SECRET``, so the
fuzz reaches the routes' own validation. SSE GETs get a token that expires two
seconds later: a stream ends when its token does, so each one is bounded.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

from tests.tokens import hs256_token

STREAMS = {"/api/events", "/api/messages/{id}/events"}


def token(ttl_s: int) -> str:
    return hs256_token(os.environ["HERALD_JWT_SECRET"], "fuzz", ("admin",), ttl_s)


@schemathesis.auth(refresh_interval=None)
class FuzzToken:
    def get(self, case: Any, ctx: Any) -> str:
        streaming = case.method.upper() == "GET" and case.operation.path in STREAMS
        return token(2 if streaming else 3600)

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

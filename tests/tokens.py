"""Test tokens signed without the app: the claims ``Authenticator.issue`` signs, HS256,
with a secret given outright (the app's ``Settings`` would read ``HERALD_*`` from this
process's environment, which a server under test does not see)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import jwt


def hs256_token(secret: str, user: str, roles: Sequence[str] = (), ttl_s: int = 3600) -> str:
    now = int(time.time())
    claims = {"sub": user, "roles": list(roles), "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, secret, algorithm="HS256")

"""Authentication at the door: JWT verification, token issuing for the CLI, and the
request-side lookup (Bearer header, cookie, ``?token=``, or a single-use ``?ticket=``).

Every refusal is an ``AuthError`` carrying the HTTP status and a reason code that
says what was wrong, so a client can tell "log in again" from "ask for a role".
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from starlette.requests import HTTPConnection

from herald.api.tickets import TicketStore, stream_cookie_name
from herald.journal.positions import NAME_RE
from herald.journal.runtime.settings import Settings

__all__ = [
    "AuthError",
    "Authenticator",
    "Principal",
    "load_or_create_secret",
    "load_secret",
    "opens_stream",
    "require_role",
]

_SECRET_FILE = "jwt_secret"
_NO_ROLES: frozenset[str] = frozenset()
# 9999-12-31T23:59:59Z: the last instant an RFC 3339 time (and a datetime) can hold.
MAX_EXP = 253402300799
# What a ticket (or the stream cookie it set) may open: the SSE streams, read only,
# and whoami (herald.js asks it who a ticket belongs to before it streams).
_STREAM_PATH = re.compile(r"/api/events|/api/messages/[^/]+/events|/api/whoami")


class AuthError(Exception):
    """A request is not allowed; ``status`` is 401 (who are you) or 403 (not you)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Principal:
    user: str
    roles: frozenset[str]
    expires_at: float  # unix seconds; streams end when this passes

    def has_any_role(self, *roles: str) -> bool:
        return not self.roles.isdisjoint(roles)

    def to_claims(self) -> dict[str, Any]:
        return {"sub": self.user, "roles": sorted(self.roles), "exp": self.expires_at}

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> Principal:
        sub = claims.get("sub")
        if not isinstance(sub, str) or not NAME_RE.fullmatch(sub):
            raise AuthError(
                401, "bad_claims", f"'sub' must be a user id matching {NAME_RE.pattern}"
            )
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise AuthError(401, "bad_claims", "'roles' must be a list of strings")
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, int | float) or not 0 < exp <= MAX_EXP:
            raise AuthError(
                401, "bad_claims", f"'exp' must be a time in seconds up to {MAX_EXP} (year 9999)"
            )
        # Most tokens carry no role: share one empty set instead of one per stream.
        return cls(sub, frozenset(roles) if roles else _NO_ROLES, float(exp))


def load_secret(data_dir: Path) -> str | None:
    """The embedded default's HS256 secret if ``herald serve`` made one in ``data_dir``."""
    path = data_dir / _SECRET_FILE
    return path.read_text().strip() if path.exists() else None


def load_or_create_secret(data_dir: Path) -> str:
    """The embedded default's HS256 secret: generated once, kept in the data folder."""
    path = data_dir / _SECRET_FILE
    if (existing := load_secret(data_dir)) is not None:
        return existing
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    # Create exclusively with owner-only permissions; if another process won the
    # race, use its secret so both agree.
    try:
        with path.open("x", encoding="ascii") as f:
            path.chmod(0o600)
            f.write(secret + "\n")
    except FileExistsError:
        return path.read_text().strip()
    return secret


def _read_key(value: str) -> str:
    return Path(value).read_text() if value and not value.lstrip().startswith("-----") else value


class Authenticator:
    """Verifies tokens with the configured algorithm and key; issues them for the CLI."""

    def __init__(self, settings: Settings, *, secret: str | None = None) -> None:
        self.algorithm = settings.jwt_algorithm
        self.leeway_s = settings.jwt_leeway_s
        self.cookie = settings.auth_cookie
        self._signing_key: str | None
        if self.algorithm == "HS256":
            key = secret or (
                settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
            )
            if not key:
                raise ValueError("HERALD_JWT_SECRET is required for HS256")
            self._verify_key: str = key
            self._signing_key = key
        else:
            if not settings.jwt_public_key:
                raise ValueError(f"HERALD_JWT_PUBLIC_KEY is required for {self.algorithm}")
            self._verify_key = _read_key(settings.jwt_public_key)
            self._signing_key = (
                _read_key(settings.jwt_private_key) if settings.jwt_private_key else None
            )

    @property
    def can_issue(self) -> bool:
        return self._signing_key is not None

    def issue(self, user: str, roles: tuple[str, ...] = (), ttl_s: int = 3600) -> str:
        if self._signing_key is None:
            raise ValueError(f"HERALD_JWT_PRIVATE_KEY is needed to issue {self.algorithm} tokens")
        if not NAME_RE.fullmatch(user):
            raise ValueError(f"user id {user!r} must match {NAME_RE.pattern}")
        now = int(time.time())
        claims = {"sub": user, "roles": list(roles), "iat": now, "exp": now + ttl_s}
        return jwt.encode(claims, self._signing_key, algorithm=self.algorithm)

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._verify_key,
                algorithms=[self.algorithm],
                leeway=self.leeway_s,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError as e:
            raise AuthError(401, "token_expired", "the token has expired") from e
        except jwt.InvalidSignatureError as e:
            raise AuthError(401, "bad_signature", "the token's signature does not verify") from e
        except jwt.MissingRequiredClaimError as e:
            raise AuthError(401, "missing_claim", f"the token has no '{e.claim}' claim") from e
        except jwt.InvalidAlgorithmError as e:
            raise AuthError(
                401, "bad_algorithm", f"the token must be signed with {self.algorithm}"
            ) from e
        except jwt.InvalidTokenError as e:
            raise AuthError(401, "malformed_token", f"the token is not a valid JWT: {e}") from e
        return Principal.from_claims(claims)

    async def authenticate(self, conn: HTTPConnection, tickets: TicketStore) -> Principal:
        return (await self.identify(conn, tickets))[0]

    async def identify(self, conn: HTTPConnection, tickets: TicketStore) -> tuple[Principal, str]:
        """Find the caller and say how: ``ticket`` (single use; once spent, ``session``
        with the cookie its first stream set), then ``bearer``, ``cookie``, ``query``."""
        ticket = conn.query_params.get("ticket")
        if ticket is not None:
            # Checked before redeeming: a ticket sent to the wrong route stays unspent.
            if not opens_stream(conn):
                raise AuthError(
                    403,
                    "ticket_scope",
                    "a ticket (and its stream cookie) opens event streams only: "
                    "GET /api/events, GET /api/messages/{id}/events (and GET /api/whoami)",
                )
            via, claims = "ticket", await tickets.redeem(ticket)
            secret = conn.cookies.get(stream_cookie_name(ticket))
            if claims is None and secret:
                via, claims = "session", await tickets.session(ticket, secret)
            if claims is None:
                raise AuthError(401, "bad_ticket", "the ticket is unknown, expired or used")
            principal = Principal.from_claims(claims)
            if principal.expires_at <= time.time():
                raise AuthError(401, "token_expired", "the ticket's token has expired")
            return principal, via
        header = conn.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthError(401, "bad_header", "Authorization must be 'Bearer <token>'")
            return self.verify(token.strip()), "bearer"
        if found := conn.cookies.get(self.cookie):
            return self.verify(found), "cookie"
        if found := conn.query_params.get("token"):
            return self.verify(found), "query"
        raise AuthError(
            401,
            "missing_token",
            f"no token: send 'Authorization: Bearer <jwt>', the '{self.cookie}' cookie, "
            "?token=<jwt> or ?ticket=<ticket>",
        )


def opens_stream(conn: HTTPConnection) -> bool:
    """Whether the request opens an SSE stream (or asks whoami): what a ticket is for."""
    return (
        conn.scope.get("method") == "GET"
        and _STREAM_PATH.fullmatch(conn.url.path) is not None
        and conn.query_params.get("format") != "json"
    )


def require_role(principal: Principal, *roles: str) -> None:
    if not principal.has_any_role(*roles):
        raise AuthError(403, "role_missing", f"this needs one of the roles: {', '.join(roles)}")

"""Pending OAuth authorizations: one Redis record per ``state``, taken at most once.

The connect task saves a record under the ``state`` it put in the authorization URL
(``SET NX EX``); the callback takes it with ``GETDEL``, so a state works once, and a
state past its TTL, already used, or never issued all read as unknown.  Keys hold
the SHA-256 of the state, never the state itself, so key listings and slow logs do
not show a usable credential.  The record's secrets (PKCE verifier, client secret)
travel sealed (``herald.journal.oauth.secretbox``): only workers, which hold the key, open them.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

import orjson
import redis.asyncio as aioredis

from herald.journal.oauth.keys import pending_key

__all__ = [
    "PendingAuthorization",
    "PendingAuthorizations",
    "UnsafeUrl",
    "binding_of",
    "bound_to",
    "check_url",
    "new_state",
]

_MAX_URL = 2048


class UnsafeUrl(ValueError):
    """A URL Herald will not send OAuth traffic to; the message says why."""


def check_url(url: object, what: str = "URL") -> str:
    """``url`` if it is an absolute https URL (http only to a loopback host, for local
    servers), without credentials or fragment; raises ``UnsafeUrl`` otherwise.

    Tokens and codes travel to these URLs, so plain http off the machine is refused.
    """
    if not isinstance(url, str) or not url or len(url) > _MAX_URL:
        raise UnsafeUrl(f"{what} must be a URL of 1..{_MAX_URL} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise UnsafeUrl(f"{what} {url!r} is not a valid URL: {e}") from e
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UnsafeUrl(f"{what} {url!r} must be an absolute https:// URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise UnsafeUrl(f"{what} {url!r} must use https (http is allowed only for loopback)")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl(f"{what} {url!r} must not contain credentials")
    if parts.fragment or url.endswith("#"):
        raise UnsafeUrl(f"{what} {url!r} must not have a fragment")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise UnsafeUrl(f"{what} must not contain spaces or control characters")
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_state() -> str:
    """An unguessable ``state`` (256 bits): it is the callback's only credential."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class PendingAuthorization:
    """What the callback needs to hand the code to the right task and owner."""

    task_id: str
    owner: str
    server_url: str
    sealed: str  # base64url of the sealed secrets; see workers.oauth
    # SHA-256 (hex) of the key the connecting browser holds in a cookie; the callback
    # must come with it.  Empty: the connect was not made over HTTP (unbound).
    binding: str = ""


class PendingAuthorizations:
    """The records of authorizations waiting for their browser redirect."""

    def __init__(self, redis: aioredis.Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s

    async def save(self, state: str, record: PendingAuthorization) -> None:
        """Store ``record`` under ``state`` for ``ttl_s``; a state is never overwritten."""
        stored = await self.redis.set(
            pending_key(state), orjson.dumps(asdict(record)), ex=self.ttl_s, nx=True
        )
        if not stored:  # 256 random bits collided: a bug, not bad luck
            raise RuntimeError("an OAuth state was issued twice")

    async def take(self, state: str) -> PendingAuthorization | None:
        """The record for ``state``, removed in the same step; None if unknown, expired
        or already taken."""
        return _record(await self.redis.getdel(pending_key(state)))

    async def peek(self, state: str) -> PendingAuthorization | None:
        """The record for ``state`` without taking it (to check who may take it)."""
        return _record(await self.redis.get(pending_key(state)))


def _record(raw: bytes | str | None) -> PendingAuthorization | None:
    if raw is None:
        return None
    fields = orjson.loads(raw)
    return PendingAuthorization(
        task_id=fields["task_id"],
        owner=fields["owner"],
        server_url=fields["server_url"],
        sealed=fields["sealed"],
        binding=str(fields.get("binding") or ""),
    )


def binding_of(browser_key: str) -> str:
    """What a pending record keeps of the browser's key (never the key itself)."""
    return hashlib.sha256(browser_key.encode()).hexdigest()


def bound_to(record: PendingAuthorization, browser_key: str | None) -> bool:
    """Whether the callback comes from the browser that started the connect."""
    if not record.binding:
        return True
    if not browser_key:
        return False
    return hmac.compare_digest(binding_of(browser_key), record.binding)

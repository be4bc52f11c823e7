"""MCP OAuth as two tasks sharing one task id and the ``mcp.oauth`` events.

``mcp.oauth.connect`` discovers the authorization server, registers Herald as a
client, saves a single-use ``state`` record and publishes
``mcp.oauth.awaiting_redirect {authorization_url, expires_at}``; its outcome comes
later (``DEFERRED``).  When the browser returns, the callback route enqueues
``mcp.oauth.exchange`` under the same task id: it trades the code for tokens,
stores them sealed in ``oauth_tokens``, and returns ``{server_url, scope,
expires_at}``, which the runtime publishes as ``mcp.oauth.completed``.  Any failure
on either side is ``mcp.oauth.failed`` with a code.  Tokens never enter an event,
a log line or Redis: Redis holds only the sealed PKCE verifier and client.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from herald.journal.envelope import format_time
from herald.journal.oauth.addresses import parse_networks
from herald.journal.oauth.pending import (
    PendingAuthorization,
    PendingAuthorizations,
    UnsafeUrl,
    check_url,
    new_state,
)
from herald.journal.oauth.secretbox import SecretBox, SecretBoxError, secretbox_for
from herald.journal.oauth.tokens import save_token_set
from herald.journal.runtime.db import DatabaseUnavailable
from herald.journal.runtime.settings import Settings
from herald.workers._oauth_client import (
    AuthServer,
    Client,
    authorization_url,
    discover,
    exchange_code,
    pkce_pair,
    register_client,
)
from herald.workers.netguard import guarded_client
from herald.workers.task import DEFERRED, Deferred, TaskContext, TaskError, TaskRegistry

__all__ = ["CONNECT", "EVENTS", "EXCHANGE", "connect", "exchange", "register"]

CONNECT = "mcp.oauth.connect"
EXCHANGE = "mcp.oauth.exchange"
EVENTS = "mcp.oauth"

# RFC 6749 §4.1.2.1: the error codes an authorization server may redirect with.
# Anything else is reported as `authorization_failed` (the value is the server's).
_AS_ERRORS = frozenset(
    {
        "invalid_request",
        "unauthorized_client",
        "access_denied",
        "unsupported_response_type",
        "invalid_scope",
        "server_error",
        "temporarily_unavailable",
    }
)


def register(registry: TaskRegistry) -> None:
    # The exchange continues the connect task's id, so it publishes no `queued`.
    registry.task(CONNECT, events=EVENTS)(connect)
    registry.task(EXCHANGE, events=EVENTS, publish_queued=False)(exchange)


def _box(settings: Settings) -> SecretBox:
    try:
        return secretbox_for(settings)
    except SecretBoxError as e:
        raise TaskError(e.code, str(e), retry=False) from e


def _http(settings: Settings) -> httpx.AsyncClient:
    return guarded_client(
        parse_networks(settings.oauth_allowed_networks),
        timeout=settings.oauth_http_timeout_s,
        follow_redirects=False,
        headers={"Accept": "application/json", "User-Agent": "Herald"},
    )


def _pending_context(task_id: str) -> bytes:
    return orjson.dumps(["oauth_pending", task_id])


def _text(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise TaskError("invalid_payload", f"payload field {name!r} must be a string", retry=False)
    return value


def _optional(payload: dict[str, Any], name: str) -> str | None:
    return None if payload.get(name) is None else _text(payload, name)


async def connect(ctx: TaskContext) -> Deferred:
    """Discover, register, and publish the authorization URL; the exchange finishes it."""
    try:
        server_url = check_url(_text(ctx.payload, "server_url"), "server_url")
    except UnsafeUrl as e:
        raise TaskError("invalid_server_url", str(e), retry=False) from e
    redirect_uri = _text(ctx.payload, "redirect_uri")
    scope = _optional(ctx.payload, "scope")
    client_id = _optional(ctx.payload, "client_id")
    box = _box(ctx.settings)  # before any network: a missing key fails at once
    async with _http(ctx.settings) as http:
        found = await discover(http, server_url)
        scope = scope or " ".join(found.scopes) or None
        if client_id is not None:
            client = Client(client_id, None, "none")  # pre-registered public client
        else:
            client = await register_client(
                http,
                found.server,
                redirect_uri=redirect_uri,
                client_name=ctx.settings.oauth_client_name,
                scope=scope,
            )
    verifier, challenge = pkce_pair()
    secrets_ = {
        "verifier": verifier,
        "client": [client.client_id, client.client_secret, client.auth_method],
        "server": {
            "issuer": found.server.issuer,
            "authorization_endpoint": found.server.authorization_endpoint,
            "token_endpoint": found.server.token_endpoint,
            "iss_parameter": found.server.iss_parameter,
        },
        "resource": found.resource,
        "redirect_uri": redirect_uri,
        "scope": scope,
    }
    sealed = box.seal(orjson.dumps(secrets_), _pending_context(ctx.task_id))
    state = new_state()
    pending = PendingAuthorizations(ctx.redis, ctx.settings.oauth_state_ttl_s)
    await pending.save(
        state,
        PendingAuthorization(
            ctx.task_id,
            ctx.owner,
            server_url,
            base64.urlsafe_b64encode(sealed).decode(),
            binding=_optional(ctx.payload, "binding") or "",
        ),
    )
    url = authorization_url(
        found.server,
        client,
        redirect_uri=redirect_uri,
        state=state,
        challenge=challenge,
        resource=found.resource,
        scope=scope,
    )
    expires = datetime.now(UTC) + timedelta(seconds=ctx.settings.oauth_state_ttl_s)
    await ctx.publish(
        "awaiting_redirect", {"authorization_url": url, "expires_at": format_time(expires)}
    )
    return DEFERRED


def _open_secrets(box: SecretBox, task_id: str, sealed: str) -> dict[str, Any]:
    try:
        raw = box.open(base64.urlsafe_b64decode(sealed.encode()), _pending_context(task_id))
    except (SecretBoxError, ValueError) as e:
        # The key changed between connect and callback, or the record is not ours.
        raise TaskError(
            "invalid_state", "the pending authorization cannot be read; connect again", retry=False
        ) from e
    opened: dict[str, Any] = orjson.loads(raw)
    return opened


def _redirect_error(payload: dict[str, Any]) -> TaskError:
    # Only a code from RFC 6749's list is repeated: the rest of the redirect is
    # remote text, and events must not carry what a server chose to say.
    error = str(payload.get("error"))
    if error in _AS_ERRORS:
        return TaskError(error, f"the authorization server answered {error!r}", retry=False)
    return TaskError(
        "authorization_failed", "the authorization server refused the authorization", retry=False
    )


async def exchange(ctx: TaskContext) -> dict[str, Any]:
    """Trade the code for tokens, store them sealed, return what ``completed`` says."""
    box = _box(ctx.settings)
    secrets_ = _open_secrets(box, ctx.task_id, _text(ctx.payload, "sealed"))
    if ctx.payload.get("error") is not None:
        raise _redirect_error(ctx.payload)
    code = _text(ctx.payload, "code")
    server = AuthServer(
        issuer=secrets_["server"]["issuer"],
        authorization_endpoint=secrets_["server"]["authorization_endpoint"],
        token_endpoint=secrets_["server"]["token_endpoint"],
        registration_endpoint=None,
        auth_methods=(),
        iss_parameter=secrets_["server"]["iss_parameter"],
    )
    # RFC 9207: a redirect naming another issuer is a mix-up attack; so is a missing
    # `iss` from a server that promised to send it.
    iss = ctx.payload.get("iss")
    if (iss is not None and iss != server.issuer) or (iss is None and server.iss_parameter):
        raise TaskError(
            "issuer_mismatch",
            f"the redirect came from {iss!r}, not from {server.issuer!r}",
            retry=False,
        )
    client = Client(*secrets_["client"])
    async with _http(ctx.settings) as http:
        tokens = await exchange_code(
            http,
            server,
            client,
            code=code,
            redirect_uri=secrets_["redirect_uri"],
            verifier=secrets_["verifier"],
            resource=secrets_["resource"],
        )
    now = datetime.now(UTC)
    expires_in = tokens.get("expires_in")
    expires_at = now + timedelta(seconds=expires_in) if isinstance(expires_in, int) else None
    # RFC 6749 §5.1: no scope in the response means the requested scope was granted.
    scope = tokens.get("scope") if isinstance(tokens.get("scope"), str) else secrets_["scope"]
    server_url = _text(ctx.payload, "server_url")
    if ctx.engine is None:
        raise TaskError("database_unavailable", "no database is configured", retry=False)
    try:
        await save_token_set(
            ctx.engine,
            box,
            user=ctx.owner,
            server_url=server_url,
            token_set={
                "token": tokens,
                "obtained_at": format_time(now),
                "issuer": server.issuer,
                "token_endpoint": server.token_endpoint,
                "resource": secrets_["resource"],
                "client": secrets_["client"],
            },
            expires_at=expires_at,
            scope=scope,
        )
    except DatabaseUnavailable as e:
        # Not retried: the code is spent, and a second exchange would be refused.
        raise TaskError(e.code, "the tokens could not be stored; connect again", retry=False) from e
    return {
        "server_url": server_url,
        "scope": scope,
        "expires_at": format_time(expires_at) if expires_at else None,
    }

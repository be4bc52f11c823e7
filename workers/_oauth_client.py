"""The client half of OAuth as MCP uses it: discovery (RFC 9728, then RFC 8414),
dynamic client registration (RFC 7591), PKCE S256 (RFC 7636) with resource
indicators (RFC 8707), and the authorization-code exchange.

Every failure raises ``TaskError`` with a stable code: a server that cannot be
reached is retried (``retry=True``), an answer that is wrong will not get better
(``retry=False``).  Redirects are not followed and bodies are capped, because the
URLs come from users and from the servers themselves.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import httpx
import orjson

from herald.journal.oauth.pending import UnsafeUrl, check_url
from herald.workers.netguard import AddressRefused
from herald.workers.task import TaskError

__all__ = [
    "AuthServer",
    "Client",
    "Discovery",
    "authorization_url",
    "discover",
    "exchange_code",
    "pkce_pair",
    "register_client",
    "well_known_urls",
]

_MAX_BODY = 256 * 1024
MCP_PROTOCOL_VERSION = "2025-06-18"
# Ours first: a backend keeps a secret safely (sealed at rest), so it registers as a
# confidential client where the server allows it, and as a public one otherwise.
_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")


@dataclass(frozen=True, slots=True)
class AuthServer:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    registration_endpoint: str | None
    auth_methods: tuple[str, ...]
    iss_parameter: bool  # RFC 9207: the redirect carries `iss`, which must match


@dataclass(frozen=True, slots=True)
class Discovery:
    resource: str  # the RFC 8707 resource indicator: the MCP server's URL
    scopes: tuple[str, ...]
    server: AuthServer


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    client_secret: str | None
    auth_method: str  # none | client_secret_basic | client_secret_post


def well_known_urls(url: str, suffix: str) -> list[str]:
    """Where ``url``'s ``/.well-known/<suffix>`` document may be, most specific first:
    inserted before the path (RFC 8414 §3.1, RFC 9728 §3.1), then at the root."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    root = urlunsplit((parts.scheme, parts.netloc, f"/.well-known/{suffix}", "", ""))
    if not path:
        return [root]
    return [urlunsplit((parts.scheme, parts.netloc, f"/.well-known/{suffix}{path}", "", "")), root]


def _as_metadata_urls(issuer: str) -> list[str]:
    # MCP's order: RFC 8414, then OpenID Connect Discovery with path insertion, then
    # OpenID Connect Discovery appended to the issuer's path.
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    urls = [well_known_urls(issuer, "oauth-authorization-server")[0]]
    urls.append(well_known_urls(issuer, "openid-configuration")[0])
    if path:
        urls.append(
            urlunsplit(
                (parts.scheme, parts.netloc, f"{path}/.well-known/openid-configuration", "", "")
            )
        )
    return urls


async def _request(
    http: httpx.AsyncClient, method: str, url: str, what: str, **kwargs: Any
) -> tuple[int, Any]:
    """(status, JSON body or None); a transport failure is a retryable TaskError."""
    try:
        async with http.stream(method, url, **kwargs) as response:
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > _MAX_BODY:
                    raise TaskError(
                        f"{what}_failed", f"{what}: answer from {url} is too large", retry=False
                    )
    except AddressRefused as e:
        raise TaskError(e.code, f"{what}: {e}", retry=False) from e
    except httpx.HTTPError as e:
        raise TaskError(f"{what}_failed", f"{what}: cannot reach {url}: {type(e).__name__}") from e
    try:
        return response.status_code, orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return response.status_code, None


async def _get_document(http: httpx.AsyncClient, urls: list[str]) -> tuple[str, dict[str, Any]]:
    """The first URL answering 200 with a JSON object, and that object ("", {}: none)."""
    for url in urls:
        status, body = await _request(
            http, "GET", url, "discovery", headers={"MCP-Protocol-Version": MCP_PROTOCOL_VERSION}
        )
        if status >= 500:
            raise TaskError("discovery_failed", f"{url} answered HTTP {status}")
        if status == 200 and isinstance(body, dict):
            return url, body
    return "", {}


# Error codes of RFC 7591 §3.2.2 and RFC 6749 §5.2: the only remote words an event
# repeats (anything else a server says is its own text, not ours to publish).
_REGISTRATION_ERRORS = frozenset(
    {
        "invalid_redirect_uri",
        "invalid_client_metadata",
        "invalid_software_statement",
        "unapproved_software_statement",
    }
)
_TOKEN_ERRORS = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
    }
)


def _known(body: Any, codes: frozenset[str]) -> str | None:
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) and error in codes else None


def _url_field(doc: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = doc.get(name)
    if value is None and not required:
        return None
    try:
        return check_url(value, name)
    except UnsafeUrl as e:
        raise TaskError(
            "invalid_metadata", f"authorization server metadata: {e}", retry=False
        ) from e


def _strings(doc: dict[str, Any], name: str) -> tuple[str, ...] | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TaskError(
            "invalid_metadata", f"metadata field {name!r} must be a list of strings", retry=False
        )
    return tuple(value)


async def discover(http: httpx.AsyncClient, server_url: str) -> Discovery:
    """Find and validate the authorization server protecting ``server_url``.

    The protected resource metadata (RFC 9728) names it; a server without that
    document is taken to be its own authorization server at its origin (the MCP
    2025-03-26 rule).  The AS metadata's ``issuer`` must equal the issuer it was
    fetched for (RFC 8414 §3.3), and PKCE S256 must be advertised (MCP requires it).
    """
    resource = server_url
    scopes: tuple[str, ...] = ()
    _, prm = await _get_document(http, well_known_urls(server_url, "oauth-protected-resource"))
    if prm:
        if str(prm.get("resource", "")).rstrip("/") != server_url.rstrip("/"):
            raise TaskError(
                "resource_mismatch",
                f"the resource metadata names another resource than {server_url!r}",
                retry=False,
            )
        servers = _strings(prm, "authorization_servers") or ()
        if not servers:
            raise TaskError(
                "discovery_failed",
                "the protected resource names no authorization server",
                retry=False,
            )
        issuer = servers[0]
        scopes = _strings(prm, "scopes_supported") or ()
    else:
        parts = urlsplit(server_url)
        issuer = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    try:
        check_url(issuer, "authorization server")
    except UnsafeUrl as e:
        raise TaskError("invalid_metadata", str(e), retry=False) from e
    found_at, meta = await _get_document(http, _as_metadata_urls(issuer))
    if not meta:
        raise TaskError(
            "discovery_failed", f"no authorization server metadata found for {issuer}", retry=False
        )
    if str(meta.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        raise TaskError(
            "issuer_mismatch",
            f"metadata at {found_at} names another issuer than {issuer!r}",
            retry=False,
        )
    if "S256" not in (_strings(meta, "code_challenge_methods_supported") or ()):
        raise TaskError(
            "pkce_unsupported", f"{issuer} does not advertise PKCE with S256", retry=False
        )
    if "code" not in (_strings(meta, "response_types_supported") or ("code",)):
        raise TaskError("invalid_metadata", f"{issuer} does not offer the code flow", retry=False)
    server = AuthServer(
        issuer=str(meta["issuer"]),
        authorization_endpoint=_url_field(meta, "authorization_endpoint") or "",
        token_endpoint=_url_field(meta, "token_endpoint") or "",
        registration_endpoint=_url_field(meta, "registration_endpoint", required=False),
        # RFC 8414 §2: absent means client_secret_basic only.
        auth_methods=_strings(meta, "token_endpoint_auth_methods_supported")
        or ("client_secret_basic",),
        iss_parameter=meta.get("authorization_response_iss_parameter_supported") is True,
    )
    return Discovery(resource, scopes, server)


async def register_client(
    http: httpx.AsyncClient,
    server: AuthServer,
    *,
    redirect_uri: str,
    client_name: str,
    scope: str | None,
) -> Client:
    """Register Herald with ``server`` (RFC 7591) for this redirect URI."""
    if server.registration_endpoint is None:
        raise TaskError(
            "registration_unsupported",
            f"{server.issuer} offers no dynamic client registration; give a registered client_id",
            retry=False,
        )
    method = next((m for m in _AUTH_METHODS if m in server.auth_methods), None)
    if method is None:
        raise TaskError(
            "registration_unsupported",
            f"{server.issuer} supports none of the client authentication methods "
            + ", ".join(_AUTH_METHODS),
            retry=False,
        )
    request: dict[str, Any] = {
        "client_name": client_name,
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": method,
    }
    if scope:
        request["scope"] = scope
    status, body = await _request(
        http, "POST", server.registration_endpoint, "registration", json=request
    )
    if status >= 500:
        raise TaskError("registration_failed", f"client registration answered HTTP {status}")
    if status not in (200, 201) or not isinstance(body, dict):
        error = _known(body, _REGISTRATION_ERRORS)
        raise TaskError(
            "registration_failed",
            f"client registration was refused (HTTP {status}{', ' + error if error else ''})",
            retry=False,
        )
    client_id, secret = body.get("client_id"), body.get("client_secret")
    if not isinstance(client_id, str) or not client_id:
        raise TaskError(
            "registration_failed", "client registration returned no client_id", retry=False
        )
    granted = body.get("token_endpoint_auth_method") or method
    if granted != "none" and not isinstance(secret, str):
        raise TaskError(
            "registration_failed",
            f"registered for {granted} but no client_secret was returned",
            retry=False,
        )
    return Client(client_id, secret if isinstance(secret, str) else None, str(granted))


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge): 64 unreserved characters and their base64url SHA-256."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorization_url(
    server: AuthServer,
    client: Client,
    *,
    redirect_uri: str,
    state: str,
    challenge: str,
    resource: str,
    scope: str | None,
) -> str:
    """The URL the user opens; parameters the endpoint already carries are kept."""
    parts = urlsplit(server.authorization_endpoint)
    params = parse_qsl(parts.query, keep_blank_values=True)
    params += [
        ("response_type", "code"),
        ("client_id", client.client_id),
        ("redirect_uri", redirect_uri),
        ("state", state),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("resource", resource),
    ]
    if scope:
        params.append(("scope", scope))
    return urlunsplit(parts._replace(query=urlencode(params)))


async def exchange_code(
    http: httpx.AsyncClient,
    server: AuthServer,
    client: Client,
    *,
    code: str,
    redirect_uri: str,
    verifier: str,
    resource: str,
) -> dict[str, Any]:
    """The token response for ``code`` (RFC 6749 §4.1.3), validated.

    A 4xx answer is final (the code is single-use and will not get better); a
    server error or an unreachable server is retried.
    """
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
        "resource": resource,
    }
    headers = {"Accept": "application/json"}
    if client.auth_method == "client_secret_basic":
        # RFC 6749 §2.3.1: both parts are form-encoded before joining.
        pair = f"{quote(client.client_id, safe='')}:{quote(client.client_secret or '', safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    else:
        form["client_id"] = client.client_id
        if client.auth_method == "client_secret_post":
            form["client_secret"] = client.client_secret or ""
    status, body = await _request(
        http, "POST", server.token_endpoint, "token_exchange", data=form, headers=headers
    )
    if status >= 500:
        raise TaskError("token_exchange_failed", f"the token endpoint answered HTTP {status}")
    if status != 200:
        error = _known(body, _TOKEN_ERRORS)
        raise TaskError(
            "token_exchange_failed",
            f"the authorization server refused the code (HTTP {status}"
            f"{', ' + error if error else ''})",
            retry=False,
        )
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("access_token"), str)
        or not isinstance(body.get("token_type"), str)
    ):
        raise TaskError(
            "token_exchange_failed",
            "the token response has no access_token/token_type",
            retry=False,
        )
    expires_in = body.get("expires_in")
    if expires_in is not None and (not isinstance(expires_in, int) or expires_in < 0):
        raise TaskError(
            "token_exchange_failed", "the token response has a bad expires_in", retry=False
        )
    return body

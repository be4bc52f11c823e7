"""Cross-site request refusal for cookie-authenticated writes (CSRF), in one place.

A browser attaches the ``herald_token`` cookie to any request to Herald, whichever
site made it; a Bearer header or ``?token=`` it never adds by itself.  So a
state-changing request (POST, PUT, PATCH, DELETE) whose credential would be the
cookie — it carries the cookie and no ``Authorization`` header — must come from
Herald's own origin:

* ``Origin`` present: its host (and port) must be the request's ``Host`` or the
  origin of ``HERALD_PUBLIC_URL``; ``null`` (sandboxed frames, some redirects) is
  refused;
* else ``Sec-Fetch-Site`` present: it must be ``same-origin`` or ``none`` (typed
  by the user);
* neither: not a browser that could have been lured (curl, servers) — allowed.

Refused requests get ``403 cross_site_request`` before any route runs.  JSON
bodies must also be sent as JSON (``415``, see ``schemas.read_json``): a
cross-site form cannot set that content type without a CORS preflight.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from herald.api.errors import error_response

__all__ = ["RefuseCrossSite", "is_cross_site"]

_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _host_port(netloc: str, scheme: str) -> str | None:
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    return f"{host}:{port or _DEFAULT_PORTS.get(scheme, 0)}"


def is_cross_site(
    origin: str | None, fetch_site: str | None, host: str | None, public_url: str = ""
) -> bool:
    """Whether a browser request came from another site (pure: headers in, verdict out)."""
    if origin is not None:
        if origin == "null":
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:
            return True
        if parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
            return True
        theirs = _host_port(parts.netloc, parts.scheme)
        ours = set()
        if host:
            # The Host header has no scheme: the origin's own decides the default port.
            ours.add(_host_port(host, parts.scheme))
        if public_url:
            pub = urlsplit(public_url)
            ours.add(_host_port(pub.netloc, pub.scheme))
        return theirs is None or theirs not in ours
    if fetch_site is not None:
        return fetch_site not in ("same-origin", "none")
    return False


class RefuseCrossSite:
    """ASGI middleware: 403 ``cross_site_request`` for cross-site cookie writes."""

    def __init__(self, app: ASGIApp, *, cookie: str, public_url: str = "") -> None:
        self.app = app
        self.cookie = cookie
        self.public_url = public_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in _WRITES and self._refused(scope):
            response = error_response(
                403,
                "cross_site_request",
                "a request authenticated by the cookie must come from this site "
                "(Origin / Sec-Fetch-Site); other clients send 'Authorization: Bearer'",
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refused(self, scope: Scope) -> bool:
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)
        if b"authorization" in headers or b"cookie" not in headers:
            return False
        if self.cookie not in cookie_parser(headers[b"cookie"].decode("latin-1")):
            return False
        text = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()}
        return is_cross_site(
            text.get("origin"), text.get("sec-fetch-site"), text.get("host"), self.public_url
        )

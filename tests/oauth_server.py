"""A real OAuth 2 authorization server on loopback, built with authlib (Flask), for
testing Herald's MCP OAuth client end to end.

It serves what an MCP deployment serves: protected resource metadata (RFC 9728)
for ``<base>/mcp``, authorization server metadata (RFC 8414) for the issuer
``<base>/as`` (so the path-insertion rule is exercised), dynamic client
registration (RFC 7591), the authorization-code grant with PKCE S256 required, and
the ``iss`` redirect parameter (RFC 9207).  The authorization endpoint approves at
once for the user ``alice`` (or denies, with ``deny=True``): no login page.

Everything it issued and received is recorded for assertions.  It runs in a
thread with werkzeug's server; ``with AuthorizationServer() as auth:`` starts and
stops it.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer as FlaskAuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc7591 import ClientRegistrationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc9207 import IssuerParameter
from flask import Flask, jsonify, request
from werkzeug.serving import WSGIRequestHandler, make_server

__all__ = ["AuthorizationServer"]

USER = "alice"
ISSUER_PATH = "/as"


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any) -> None:  # one line per request is noise in tests
        pass


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    client_id: str
    client_secret: str | None
    redirect_uris: list[str]
    auth_method: str
    scope: str = ""

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str | None) -> str:
        return scope or ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return self.client_secret is not None and secrets.compare_digest(
            client_secret, self.client_secret
        )

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.auth_method if endpoint == "token" else True

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


@dataclass
class Code:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    code_challenge: str | None
    code_challenge_method: str | None
    resource: str | None

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass
class Record:
    clients: dict[str, Client] = field(default_factory=dict)
    codes: dict[str, Code] = field(default_factory=dict)
    tokens: list[dict[str, Any]] = field(default_factory=list)  # every token response issued
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    registrations: list[dict[str, Any]] = field(default_factory=list)


class AuthorizationServer:
    """The test authorization server.  ``mcp_url`` is the protected MCP server's URL."""

    def __init__(
        self,
        *,
        deny: bool = False,
        protected_resource: bool = True,
        registration: bool = True,
        wrong_issuer: bool = False,
    ) -> None:
        self.deny = deny
        self.record = Record()
        app = self._app(protected_resource, registration, wrong_issuer)
        self._server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Quiet)
        self.base = f"http://127.0.0.1:{self._server.server_port}"
        self.issuer = self.base + ISSUER_PATH
        self.mcp_url = self.base + "/mcp"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> AuthorizationServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def register_client(self, redirect_uri: str) -> str:
        """A pre-registered public client for ``redirect_uri``; returns its id."""
        client = Client(secrets.token_hex(8), None, [redirect_uri], "none")
        self.record.clients[client.client_id] = client
        return client.client_id

    def metadata(self, wrong_issuer: bool = False) -> dict[str, Any]:
        return {
            "issuer": self.base + "/elsewhere" if wrong_issuer else self.issuer,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "registration_endpoint": self.issuer + "/register",
            "scopes_supported": ["tools.read", "tools.write"],
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": True,
        }

    def _app(self, protected_resource: bool, registration: bool, wrong_issuer: bool) -> Flask:
        app = Flask("test-authorization-server")
        app.config["OAUTH2_REFRESH_TOKEN_GENERATOR"] = True
        app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {"authorization_code": 3600}
        record = self.record
        outer = self

        def save_token(token: dict[str, Any], req: Any) -> None:
            record.tokens.append(dict(token))

        server = FlaskAuthorizationServer(app, record.clients.get, save_token)

        class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

            def save_authorization_code(self, code: str, req: Any) -> None:
                data = req.payload.data
                record.codes[code] = Code(
                    code,
                    req.client.client_id,
                    data.get("redirect_uri"),
                    req.scope or "",
                    data.get("code_challenge"),
                    data.get("code_challenge_method"),
                    data.get("resource"),
                )

            def query_authorization_code(self, code: str, client: Client) -> Code | None:
                found = record.codes.get(code)
                return found if found and found.client_id == client.client_id else None

            def delete_authorization_code(self, code: Code) -> None:
                record.codes.pop(code.code, None)

            def authenticate_user(self, code: Code) -> str:
                return USER

        class Registration(ClientRegistrationEndpoint):  # type: ignore[misc]
            def authenticate_token(self, req: Any) -> str:
                return "open"  # open registration, as MCP servers commonly allow

            def get_server_metadata(self) -> dict[str, Any]:
                return outer.metadata()

            def save_client(self, info: dict[str, Any], meta: dict[str, Any], req: Any) -> Client:
                method = meta.get("token_endpoint_auth_method", "client_secret_basic")
                secret = None if method == "none" else info["client_secret"]
                client = Client(info["client_id"], secret, meta["redirect_uris"], method)
                record.clients[client.client_id] = client
                record.registrations.append(dict(meta))
                return client

        class Issuer(IssuerParameter):  # type: ignore[misc]
            def get_issuer(self) -> str:
                return outer.issuer

        server.register_grant(AuthorizationCodeGrant, [CodeChallenge(required=True)])
        if registration:
            server.register_endpoint(Registration)
        server.register_extension(Issuer())

        if protected_resource:

            @app.get("/.well-known/oauth-protected-resource/mcp")
            def resource_metadata() -> Any:
                return jsonify(
                    {
                        "resource": outer.mcp_url,
                        "authorization_servers": [outer.issuer],
                        "scopes_supported": ["tools.read"],
                    }
                )

        @app.get("/.well-known/oauth-authorization-server" + ISSUER_PATH)
        def server_metadata() -> Any:
            meta = outer.metadata(wrong_issuer)
            if not registration:
                del meta["registration_endpoint"]
            return jsonify(meta)

        @app.get(ISSUER_PATH + "/authorize")
        def authorize() -> Any:
            record.authorize_requests.append(dict(request.args))
            if not request.args.get("code_challenge"):  # PKCE is mandatory here
                return jsonify({"error": "invalid_request"}), 400
            try:
                grant = server.get_consent_grant(end_user=USER)
            except OAuth2Error as e:
                return server.handle_error_response(request, e)
            return server.create_authorization_response(
                grant=grant, grant_user=None if outer.deny else USER
            )

        @app.post(ISSUER_PATH + "/token")
        def token() -> Any:
            record.token_requests.append(dict(request.form))
            return server.create_token_response()

        @app.post(ISSUER_PATH + "/register")
        def register() -> Any:
            return server.create_endpoint_response("client_registration")

        return app

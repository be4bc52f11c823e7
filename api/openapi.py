"""The OpenAPI 3.1 document, built from a declaration next to each handler.

A handler declares itself with ``@endpoint(...)``: its summary, credential,
the pydantic models of its body and query, its success responses and the error
codes it answers with. The document is generated from the app's own route table
and those declarations (and ``ERRORS`` for each code's status), so a route
without a declaration is a failing test, not a silent gap. The request-body
models are the ones the handlers pass to ``parse_body``; a test checks that they
agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field
from starlette.routing import BaseRoute, Route

from herald.api.errors import ERRORS, status_of

__all__ = [
    "AUTH_ERRORS",
    "BODY_ERRORS",
    "OBJECT",
    "SECURITY_SCHEMES",
    "SSE",
    "UPLOAD",
    "UPLOAD_ERRORS",
    "UUID_PATH",
    "Endpoint",
    "ErrorBody",
    "Media",
    "declaration_of",
    "endpoint",
    "openapi_document",
    "undocumented",
]

H = TypeVar("H", bound=Callable[..., Any])

Auth = Literal["none", "token", "stream"]
"""``none``: public; ``token``: a JWT as bearer header, ``herald_token`` cookie or
``?token=``; ``stream``: those or a ``?ticket=`` (SSE GETs)."""

AUTH_ERRORS = (
    "missing_token",
    "bad_header",
    "malformed_token",
    "bad_signature",
    "token_expired",
    "missing_claim",
    "bad_claims",
    "bad_algorithm",
    "bad_ticket",
)
BODY_ERRORS = (
    "invalid_json",
    "invalid_body",
    "invalid_character",
    "body_too_large",
    "unsupported_media_type",
)
_ATTR = "__herald_endpoint__"


class ErrorBody(BaseModel):
    """Every error: a machine-readable code, a sentence, sometimes more fields."""

    error: str = Field(description="the error code; see the table of codes")
    detail: str = Field(description="what went wrong, for people")
    problems: list[dict[str, str]] | None = Field(
        None, description="invalid_body: one {field, problem} per invalid field"
    )


@dataclass(frozen=True, slots=True)
class Media:
    """A response (or request) body that is not described by a pydantic model."""

    media_type: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    description: str = ""


SSE = Media(
    "text/event-stream",
    {
        "type": "object",
        "description": "one event (OpenAPI 3.1: the schema describes each event of the stream)",
        "properties": {
            "id": {"type": "string", "description": "the cursor to resume after this event"},
            "event": {"type": "string"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "description": "a CloudEvents 1.0 envelope",
            },
            "retry": {"type": "integer", "description": "reconnect delay (ms), sent at connect"},
        },
    },
    "Server-sent events",
)
OBJECT: Mapping[str, Any] = {"type": "object"}  # a JSON object not (yet) modelled
UUID_PATH: Mapping[str, Any] = {"type": "string", "format": "uuid"}
UPLOAD = Media(
    "multipart/form-data",
    {
        "type": "object",
        "properties": {
            "file": {"type": "string", "contentMediaType": "application/octet-stream"},
            "name": {"type": "string"},
        },
        "required": ["file"],
    },
)
UPLOAD_ERRORS = (
    "invalid_multipart",
    "missing_file",
    "missing_filename",
    "empty_file",
    "file_too_large",
    "body_too_large",
    "unsupported_file_type",
    "unsupported_media_type",
)

Success = type[BaseModel] | Media | Mapping[str, Any] | tuple[Any, ...] | None
"""A model (JSON), a non-JSON ``Media``, a JSON schema, ``None`` for no body, or a
tuple of these for a response with several media types."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What one handler accepts and answers; see the module docstring."""

    summary: str
    responses: Mapping[int, Success]
    auth: Auth = "token"
    body: type[BaseModel] | None = None
    body_required: bool = True
    body_media: Media | None = None  # a second accepted body (multipart uploads)
    query: type[BaseModel] | None = None
    path: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # request header → meaning
    errors: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    description: str = ""

    def error_codes(self) -> tuple[str, ...]:
        codes = list(self.errors)
        if self.auth != "none":
            codes += AUTH_ERRORS
        if self.body is not None:
            codes += BODY_ERRORS
        return tuple(dict.fromkeys(codes))


def endpoint(summary: str, responses: Mapping[int, Success], **kwargs: Any) -> Callable[[H], H]:
    """Declare the decorated handler's contract for the OpenAPI document; the
    handler itself is returned unchanged."""
    declared = Endpoint(summary, responses, **kwargs)
    unknown = [code for code in declared.errors if code not in ERRORS]
    if unknown:
        raise ValueError(f"{summary!r}: error codes not in herald.api.errors.ERRORS: {unknown}")

    def mark(handler: H) -> H:
        setattr(handler, _ATTR, declared)
        return handler

    return mark


def declaration_of(handler: Any) -> Endpoint | None:
    found = getattr(handler, _ATTR, None)
    return found if isinstance(found, Endpoint) else None


def _operations(routes: Iterable[BaseRoute]) -> Iterable[tuple[str, str, Route]]:
    for route in routes:
        if isinstance(route, Route):
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    yield route.path, method.lower(), route


def undocumented(routes: Iterable[BaseRoute]) -> list[str]:
    """``METHOD /path`` of every route whose handler has no ``@endpoint``."""
    return [
        f"{method.upper()} {path}"
        for path, method, route in _operations(routes)
        if declaration_of(route.endpoint) is None
    ]


class _Schemas:
    """Component schemas, collected from the models as operations name them."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, model: type[BaseModel], mode: Literal["validation", "serialization"]) -> Any:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
        for name, sub in schema.pop("$defs", {}).items():
            self.components.setdefault(name, sub)
        self.components.setdefault(model.__name__, schema)
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    def content(self, success: Success) -> dict[str, Any] | None:
        if success is None:
            return None
        if isinstance(success, tuple):
            merged: dict[str, Any] = {}
            for one in success:
                merged.update(self.content(one) or {})
            return merged
        if isinstance(success, Media):
            return {success.media_type: {"schema": dict(success.schema)}}
        if isinstance(success, type):
            return {"application/json": {"schema": self.ref(success, "serialization")}}
        return {"application/json": {"schema": dict(success)}}


_PATH_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")


def _operation(decl: Endpoint, path: str, schemas: _Schemas) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": decl.summary, "tags": list(decl.tags) or ["other"]}
    if decl.description:
        op["description"] = decl.description
    params: list[dict[str, Any]] = []
    for name in _PATH_PARAM.findall(path):
        schema = dict(decl.path.get(name, {"type": "string"}))
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    if decl.query is not None:
        model = decl.query.model_json_schema(mode="validation")
        required = set(model.get("required", ()))
        for name, schema in model.get("properties", {}).items():
            param = {"name": name, "in": "query", "required": name in required}
            described = schema.pop("description", None)
            schema.pop("title", None)
            if described:
                param["description"] = described
            param["schema"] = schema
            params.append(param)
    for name, meaning in decl.headers.items():
        params.append(
            {
                "name": name,
                "in": "header",
                "required": False,
                "description": meaning,
                "schema": {"type": "string"},
            }
        )
    if params:
        op["parameters"] = params
    if decl.body is not None or decl.body_media is not None:
        content: dict[str, Any] = {}
        if decl.body is not None:
            content["application/json"] = {"schema": schemas.ref(decl.body, "validation")}
        if decl.body_media is not None:
            content[decl.body_media.media_type] = {"schema": dict(decl.body_media.schema)}
        op["requestBody"] = {"required": decl.body_required, "content": content}
    responses: dict[str, Any] = {}
    for status, success in sorted(decl.responses.items()):
        answer: dict[str, Any] = {"description": _describe(status, success)}
        body = schemas.content(success)
        if body is not None:
            answer["content"] = body
        responses[str(status)] = answer
    by_status: dict[int, list[str]] = {}
    for code in decl.error_codes():
        by_status.setdefault(status_of(code), []).append(code)
    error_ref = schemas.ref(ErrorBody, "serialization")
    for status, codes in sorted(by_status.items()):
        answer = {
            "description": "error: " + ", ".join(f"`{code}`" for code in codes),
            "content": {"application/json": {"schema": error_ref}},
        }
        if any(ERRORS[code].retry_after_s for code in codes) or status == 429:
            answer["headers"] = {
                "Retry-After": {
                    "description": "seconds to wait before retrying",
                    "schema": {"type": "string"},
                }
            }
        responses.setdefault(str(status), answer)
    op["responses"] = responses
    op["security"] = _SECURITY[decl.auth]
    return op


def _describe(status: int, success: Success) -> str:
    if isinstance(success, tuple):
        return " or ".join(_describe(status, one) for one in success)
    if isinstance(success, Media) and success.description:
        return success.description
    if isinstance(success, type):
        return (success.__doc__ or success.__name__).strip().splitlines()[0]
    return {200: "OK", 201: "Created", 202: "Accepted", 204: "No content", 304: "Not modified"}.get(
        status, "OK"
    )


_TOKEN: list[dict[str, list[str]]] = [{"bearer": []}, {"cookie": []}, {"token_query": []}]
_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "none": [],
    "token": _TOKEN,
    "stream": [*_TOKEN, {"ticket": []}],
}

SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    "cookie": {"type": "apiKey", "in": "cookie", "name": "herald_token"},
    "token_query": {"type": "apiKey", "in": "query", "name": "token"},
    "ticket": {
        "type": "apiKey",
        "in": "query",
        "name": "ticket",
        "description": "single-use, from POST /api/events/ticket; opens an SSE GET",
    },
}


def openapi_document(routes: Iterable[BaseRoute], version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes``; raises ``LookupError`` naming every
    route without a declaration."""
    routes = list(routes)
    missing = undocumented(routes)
    if missing:
        raise LookupError(f"routes without an @endpoint declaration: {', '.join(missing)}")
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for path, method, route in _operations(routes):
        decl = declaration_of(route.endpoint)
        assert decl is not None
        paths.setdefault(path, {})[method] = _operation(decl, path, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Herald",
            "version": version,
            "description": "Event-sourced pub/sub: publish, subscribe (SSE), replay.",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": SECURITY_SCHEMES,
        },
    }

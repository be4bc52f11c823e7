"""Request bodies, validated with pydantic; a failure becomes a 422 naming each field."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.requests import Request

from herald.api.errors import ApiError
from herald.journal.envelope import TYPE_RE
from herald.journal.positions import NAME_RE, Target
from herald.journal.storable import unstorable

__all__ = ["PublishBody", "is_json_type", "parse_body", "read_json", "whole_number"]

M = TypeVar("M", bound=BaseModel)


class PublishBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    user: str | None = Field(None, pattern=NAME_RE.pattern)
    topic: str | None = Field(None, pattern=NAME_RE.pattern)
    type: str = Field(json_schema_extra={"pattern": TYPE_RE.pattern})  # checked by the journal
    data: dict[str, Any]
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)
    source: str | None = Field(None, min_length=1, max_length=512)

    @model_validator(mode="after")
    def _one_target(self) -> PublishBody:
        if (self.user is None) == (self.topic is None):
            raise ValueError("give exactly one of 'user' or 'topic'")
        return self

    @property
    def target(self) -> Target:
        return Target.user(self.user) if self.user is not None else Target.topic(self.topic or "")


_MAX_DIGITS = 12  # int() of a very long string is slow, and refused beyond 4,300 digits


def whole_number(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    """A query value that must be a whole number ``low..high`` (``default`` when
    absent); anything else is ``400 bad_<name>``."""
    text = str(default) if raw is None else raw
    if not (text.isascii() and text.isdecimal() and len(text) <= _MAX_DIGITS) or not (
        low <= int(text) <= high
    ):
        raise ApiError(400, f"bad_{name}", f"{name} must be a whole number from {low} to {high}")
    return int(text)


def is_json_type(content_type: str | None) -> bool:
    """``application/json`` or ``application/<anything>+json``, parameters allowed."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_json(request: Request, limit: int) -> Any:
    """The request body as JSON, refusing bodies over ``limit`` bytes without buffering them.

    The body must be declared JSON (415 otherwise): besides saying what it is, that
    keeps a cross-site HTML form (which can send only form or text types) from
    ever reaching a JSON route."""
    if not is_json_type(request.headers.get("content-type")):
        raise ApiError(
            415,
            "unsupported_media_type",
            "send the body as JSON: 'Content-Type: application/json'",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"request body over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"request body over {limit} bytes")
        chunks.append(chunk)
    try:
        value = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as e:
        raise ApiError(422, "invalid_json", f"the body is not valid JSON: {e}") from e
    # Every JSON body may end up in PostgreSQL, which cannot store U+0000: refused
    # here, one request's payload can never fail a batch shared with others.
    if (where := unstorable(value)) is not None:
        raise ApiError(
            422,
            "invalid_character",
            f"{where} contains U+0000 (NUL), which cannot be stored",
            extra={"problems": [{"field": where, "problem": "contains U+0000"}]},
        )
    return value


def parse_body(model: type[M], raw: Any) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        problems = [
            {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "problem": err["msg"]}
            for err in e.errors(include_url=False, include_input=False)
        ]
        raise ApiError(
            422, "invalid_body", "the request body is invalid", extra={"problems": problems}
        ) from e

"""``GET /api/members/{uuid}/verification``: is this a member of the association?

The browser asks Herald, Herald asks the member directory: members' addresses never
reach the directory and its key never leaves the server.  Every lookup past the door
(a signed-in caller, a valid uuid), whatever its outcome, is also published on the
caller's own stream (``member.verified`` or ``member.verification_failed`` with the
reason), so an open page learns the result even when another tab or app asked.  A
failed publish is logged and does not change the answer.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from herald.api.errors import ApiError
from herald.api.members.directory import DirectoryNotConfigured, Lookup, MemberLookupError
from herald.api.members.mapping import parse_member_uuid
from herald.api.openapi import UUID_PATH, endpoint
from herald.api.state import AppState, state_of
from herald.journal.base import try_publish
from herald.journal.positions import Target
from herald.journal.runtime.metrics import MEMBER_LOOKUPS

__all__ = ["MemberVerification", "routes"]

log = logging.getLogger("herald.api.members")

EVENT_SOURCE = "/herald/members"


class MemberVerification(BaseModel):
    """A verified member: the answer to a successful lookup."""

    verified: Literal[True] = True
    full_name: str | None  # "{FirstName} {LastName[0]}.", else the directory's Name
    email: str | None  # as the directory has it, with "+" restored


def _response(body: MemberVerification) -> Response:
    # Personal data for one caller: no shared cache may keep it.
    return Response(
        orjson.dumps(body.model_dump()),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def _announce(state: AppState, user: str, type_: str, data: dict[str, Any]) -> None:
    """Publish on the caller's stream; a failure is logged, never raised."""
    outcome = await try_publish(state.journal, Target.user(user), type_, data, source=EVENT_SOURCE)
    if not outcome.ok and outcome.reason != "unavailable":  # try_publish logged that one
        log.warning("%s for %s not published (%s): %s", type_, user, outcome.reason, outcome.detail)


async def _lookup(state: AppState, member_uuid: str) -> Lookup:
    if state.members is None:
        raise DirectoryNotConfigured(
            "no member directory is configured (HERALD_MEMBER_DIRECTORY_URL)"
        )
    return await state.members.verify(member_uuid)


@endpoint(
    "Verify a member by uuid (cached)",
    {200: MemberVerification},
    path={"uuid": UUID_PATH},
    errors=(
        "invalid_uuid",
        "member_not_found",
        "upstream_rate_limited",
        "upstream_unavailable",
        "upstream_invalid",
        "upstream_unauthorized",
        "member_directory_busy",
        "member_directory_not_configured",
        "member_lookup_failed",
    ),
    tags=("members",),
)
async def verify_member(request: Request) -> Response:
    """Verify a member by uuid for any signed-in caller (see the module docstring)."""
    state = state_of(request)
    principal = await state.principal(request)
    raw = request.path_params["uuid"]
    member_uuid = parse_member_uuid(raw)
    if member_uuid is None:
        raise ApiError(422, "invalid_uuid", f"{raw[:64]!r} is not a UUID (8-4-4-4-12 hex digits)")
    data: dict[str, Any] = {"uuid": member_uuid}
    try:
        lookup = await _lookup(state, member_uuid)
    except MemberLookupError as e:
        MEMBER_LOOKUPS.labels(outcome=e.code).inc()
        await _announce(
            state,
            principal.user,
            "member.verification_failed",
            {**data, "reason": e.code, "detail": str(e)},
        )
        raise  # answered by its code (herald.api.errors.ERRORS), with its Retry-After
    MEMBER_LOOKUPS.labels(outcome="cached" if lookup.cached else "verified").inc()
    body = MemberVerification(full_name=lookup.member.full_name, email=lookup.member.email)
    await _announce(
        state,
        principal.user,
        "member.verified",
        {**data, **lookup.member.to_json(), "cached": lookup.cached},
    )
    return _response(body)


routes = [Route("/api/members/{uuid}/verification", verify_member, methods=["GET"])]

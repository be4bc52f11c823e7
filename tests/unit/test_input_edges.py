"""Edge cases of input that must be a 4xx, never a 500 or a silent acceptance
(issue 11, #7): trailing newlines in names and types, out-of-range token times,
tickets used beyond streams, percent-encoded secrets in logs."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace

import fakeredis
import httpx
import jwt
import pytest

from herald.api.app import create_app
from herald.api.auth import Authenticator
from herald.api.logs import redact
from herald.api.state import memory_state
from herald.api.tickets import RedisTicketStore
from herald.journal.base import JournalLimits
from herald.journal.envelope import InvalidEnvelope, prepare
from herald.journal.positions import Target
from herald.journal.redis import RedisJournal
from herald.journal.runtime.settings import Settings

SECRET = "e" * 40


@pytest.fixture
async def env() -> AsyncIterator[tuple[httpx.AsyncClient, Authenticator, RedisTicketStore]]:
    settings = Settings(jwt_secret=SECRET, redis_url="redis://fake")  # type: ignore[arg-type]
    auth = Authenticator(settings)
    client = fakeredis.FakeAsyncRedis()
    tickets = RedisTicketStore(client, 30)
    state = replace(
        memory_state(settings, auth),
        journal=RedisJournal(client, JournalLimits()),
        tickets=tickets,
    )
    app = create_app(settings, state=state)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://herald"
    ) as http:
        yield http, auth, tickets
    await client.aclose()


def _bearer(auth: Authenticator, *roles: str, user: str = "ops") -> dict[str, str]:
    return {"Authorization": f"Bearer {auth.issue(user, roles, 60)}"}


@pytest.mark.parametrize(
    "body",
    [
        {"user": "alice", "type": "answer.given\n", "data": {}},
        {"user": "alice\n", "type": "a.b", "data": {}},
        {"topic": "printers\n", "type": "a.b", "data": {}},
    ],
)
async def test_a_trailing_newline_in_a_type_or_name_is_refused(env, body):
    http, auth, _ = env
    r = await http.post("/api/publish", headers=_bearer(auth, "admin"), json=body)
    assert r.status_code == 422, r.text


def test_envelope_types_and_targets_are_matched_whole():
    with pytest.raises(InvalidEnvelope):
        prepare("answer.given\n", {}, source="/x", subject=None, max_bytes=65536)
    with pytest.raises(ValueError, match="must match"):
        Target.user("alice\n")
    with pytest.raises(ValueError, match="must match"):
        Target.topic("printers\n")


async def test_a_topic_name_with_a_trailing_newline_is_a_400_on_the_stream(env):
    http, auth, _ = env
    r = await http.get("/api/events/history", params={"topic": "printers\n"}, headers=_bearer(auth))
    assert r.status_code == 400 and r.json()["error"] == "bad_topic"


@pytest.mark.parametrize(
    ("claims", "code"),
    [
        ({"sub": "alice\n"}, "bad_claims"),
        ({"sub": "alice", "exp": 10**12}, "bad_claims"),
        ({"sub": "alice", "exp": 10**30}, "bad_claims"),
    ],
)
async def test_odd_claims_are_401_not_500(env, claims, code):
    http, _, _ = env
    token = jwt.encode({"exp": int(time.time()) + 60, **claims}, SECRET, algorithm="HS256")
    r = await http.get("/api/whoami", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401, r.text
    assert r.json()["error"] == code


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/publish"),
        ("POST", "/api/events/ticket"),
        ("GET", "/api/events/history"),
        ("POST", "/api/messages"),
        ("GET", "/api/tasks/t1"),
    ],
)
async def test_a_ticket_opens_streams_only_and_stays_unspent_elsewhere(env, method, path):
    http, auth, tickets = env
    made = await http.post("/api/events/ticket", headers=_bearer(auth, "admin", user="alice"))
    ticket = made.json()["ticket"]
    body = {"user": "alice", "type": "a.b", "data": {}} if method == "POST" else None
    r = await http.request(method, path, params={"ticket": ticket}, json=body)
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "ticket_scope"
    # Refused before it was redeemed: the ticket still opens a stream once.
    assert (await tickets.redeem(ticket)) is not None


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("GET /api/events?%74oken=s3cr3t HTTP/1.1", "s3cr3t"),
        ("GET /api/events?a=1&%54%49%43%4B%45%54=s3cr3t", "s3cr3t"),
        ("GET /cb?co%64e=s3cr3t&state=x", "s3cr3t"),
        ("GET /api/events?token=s3cr3t", "s3cr3t"),
        ("GET /api/events?to+ken=keep&x=1", None),
    ],
)
def test_percent_encoded_secret_parameters_are_redacted(line: str, secret: str | None):
    out = redact(line)
    if secret is None:
        assert out == line
    else:
        assert secret not in out and "[redacted]" in out


async def test_a_limit_of_thousands_of_digits_is_a_400_not_a_500(
    env: tuple[httpx.AsyncClient, Authenticator, RedisTicketStore],
) -> None:
    # int() refuses strings over 4,300 digits with a ValueError: the door must not get there.
    http, auth, _ = env
    digits = "1" * 5000
    r = await http.get(f"/api/events/history?limit={digits}", headers=_bearer(auth, "admin"))
    assert (r.status_code, r.json()["error"]) == (400, "bad_limit")


@pytest.mark.parametrize(
    ("raw", "ok"),
    [
        (None, 7),
        ("1", 1),
        ("10", 10),
        ("0", None),
        ("11", None),
        ("\uff11", None),
        ("9" * 13, None),
    ],
)
def test_whole_number_takes_short_ascii_digits_in_range(raw: str | None, ok: int | None) -> None:
    from herald.api.errors import ApiError
    from herald.api.schemas import whole_number

    if ok is None:
        with pytest.raises(ApiError) as caught:
            whole_number(raw, "limit", 7, 1, 10)
        assert caught.value.code == "bad_limit"
    else:
        assert whole_number(raw, "limit", 7, 1, 10) == ok

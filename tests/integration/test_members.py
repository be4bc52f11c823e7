"""Member verification end to end: Herald's route against a real member directory.

The directory (``tests/member_directory.py``) is a Starlette app served by uvicorn
on loopback, scripted per test; Herald's app runs in process over the real test
Redis (cache and journal).  Held requests prove single-flight and the concurrency
cap without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from herald.api.app import create_app
from herald.api.auth import Authenticator
from herald.api.members.directory import make_member_directory
from herald.api.members.keys import verified_key
from herald.api.state import AppState, open_state
from herald.journal.base import JournalUnavailable
from herald.journal.envelope import decode
from herald.journal.positions import ZERO_ID, Target
from herald.journal.runtime.settings import Settings
from tests.conftest import REDIS_URL
from tests.member_directory import Answer, MemberDirectoryServer
from tests.servers import TEST_SECRET, free_port

pytestmark = pytest.mark.integration

# Distinctive, so a leak into any log line or response is found by a substring search.
KEY = "nv-" + secrets.token_hex(16)
ANN = {"FirstName": "Ann", "LastName": "Smith", "Name": "Ann Smith", "Email": "ann@example.org"}


def new_uuid() -> str:
    return str(uuid.uuid4())


async def until(predicate: Callable[[], bool], seconds: float = 30) -> None:
    """Yield to the loop until in-process state changes (there is no event for it)."""
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0)


@dataclass
class Rig:
    http: httpx.AsyncClient
    state: AppState
    auth: Authenticator
    user: str
    redis: aioredis.Redis

    def headers(self, user: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.auth.issue(user or self.user, (), 600)}"}

    async def verify(self, member: str, user: str | None = None) -> httpx.Response:
        r = await self.http.get(f"/api/members/{member}/verification", headers=self.headers(user))
        assert KEY not in r.text and KEY not in str(r.headers), "the key leaked into a response"
        return r

    async def events(self, user: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        target = Target.user(user or self.user)
        page = await self.state.journal.read_after(target, ZERO_ID, limit=1000)
        found = [decode(e.envelope) for e in page.entries]
        return [(e.type, e.data) for e in found]

    async def cached(self, member: str) -> bytes | None:
        raw: bytes | None = await self.redis.get(verified_key(member))
        return raw


@asynccontextmanager
async def make_rig(unique: str, real_redis: aioredis.Redis, **overrides: Any) -> AsyncIterator[Rig]:
    settings = Settings.load(
        **{
            "redis_url": REDIS_URL,
            "database_url": "",
            "jwt_secret": TEST_SECRET,
            "member_directory_key": KEY,
            **overrides,
        }
    )
    auth = Authenticator(settings)
    async with open_state(settings, auth) as state:
        app = create_app(settings, state=state)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://herald.test"
        ) as http:
            yield Rig(http, state, auth, unique, real_redis)


@pytest.fixture
def upstream() -> Iterator[MemberDirectoryServer]:
    with MemberDirectoryServer() as server:
        yield server


@pytest.fixture
async def rig(
    unique: str, real_redis: aioredis.Redis, upstream: MemberDirectoryServer
) -> AsyncIterator[Rig]:
    async with make_rig(unique, real_redis, member_directory_url=upstream.url) as built:
        yield built
    # Tidy the shared Redis: the cache keys of the members this test looked up.
    seen = {s.uuid for s in upstream.seen()}
    if seen:
        await real_redis.delete(*(verified_key(m) for m in seen))


def error(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error", "detail"}, body
    code: str = body["error"]
    return code


# Answers.


async def test_a_member_is_verified_with_the_key_and_announced_on_the_callers_stream(
    rig: Rig, upstream: MemberDirectoryServer
):
    member = new_uuid()
    upstream.answer(member, Answer.json(ANN))
    r = await rig.verify(member)
    assert r.status_code == 200, r.text
    assert r.json() == {"verified": True, "full_name": "Ann S.", "email": "ann@example.org"}
    assert r.headers["cache-control"] == "no-store"
    (seen,) = upstream.seen(member)
    assert seen.path == f"/customers/{member}"
    assert seen.authorization == f"Basic {KEY}"
    assert await rig.events() == [
        (
            "member.verified",
            {
                "uuid": member,
                "full_name": "Ann S.",
                "email": "ann@example.org",
                "cached": False,
            },
        )
    ]


@pytest.mark.parametrize(
    ("record", "full_name", "email"),
    [
        pytest.param(ANN, "Ann S.", "ann@example.org", id="first and last"),
        pytest.param(
            {"FirstName": "Ann", "LastName": "", "Name": "Ann Smith-Jones", "Email": ""},
            "Ann Smith-Jones",
            None,
            id="last name empty: Name",
        ),
        pytest.param(
            {"FirstName": "Ann", "Name": "Ann Smith-Jones"},
            "Ann Smith-Jones",
            None,
            id="last name missing: Name",
        ),
        pytest.param(
            {"FirstName": None, "LastName": None, "Name": "Guild of Ann"},
            "Guild of Ann",
            None,
            id="only Name",
        ),
        pytest.param(
            {"FirstName": "", "LastName": "", "Name": "", "Email": "a@example.org"},
            None,
            "a@example.org",
            id="empty names, an email",
        ),
        pytest.param(
            {"FirstName": "  Ann ", "LastName": " de Vries", "Name": ""},
            "Ann d.",
            None,
            id="blanks around names",
        ),
        pytest.param({"FirstName": "Ann"}, "Ann", None, id="first name only"),
        pytest.param(
            {"Name": "  Ann   Smith ", "Email": "ann smith@Example.ORG"},
            "Ann Smith",
            "ann+smith@example.org",
            id="space where + belongs",
        ),
        pytest.param(
            {"Name": "A", "Email": " a b c@example.org "},
            "A",
            "a+b+c@example.org",
            id="several spaces and blanks around",
        ),
        pytest.param(
            {**ANN, "Email": "ann+news@example.org", "Active": True, "Tags": [1, 2]},
            "Ann S.",
            "ann+news@example.org",
            id="a + already there, other fields ignored",
        ),
    ],
)
async def test_the_answer_maps_names_and_email(
    rig: Rig,
    upstream: MemberDirectoryServer,
    record: dict[str, Any],
    full_name: str | None,
    email: str | None,
):
    member = new_uuid()
    upstream.answer(member, Answer.json(record))
    r = await rig.verify(member)
    assert r.status_code == 200, r.text
    assert r.json() == {"verified": True, "full_name": full_name, "email": email}


@pytest.mark.parametrize(
    "record",
    [
        {},
        {"FirstName": "", "LastName": "", "Name": "", "Email": ""},
        {"FirstName": None, "LastName": None, "Name": None, "Email": None, "UniqueID": "x"},
        {"FirstName": "  ", "Name": " ", "Email": "  "},
    ],
    ids=["no fields", "empty strings", "nulls", "blanks"],
)
async def test_an_empty_member_is_404_and_not_cached(
    rig: Rig, upstream: MemberDirectoryServer, record: dict[str, Any]
):
    member = new_uuid()
    upstream.answer(member, Answer.json(record))
    first = await rig.verify(member)
    again = await rig.verify(member)
    assert (first.status_code, again.status_code) == (404, 404)
    assert error(first) == "member_not_found"
    assert upstream.count(member) == 2
    assert await rig.cached(member) is None


async def test_an_unknown_member_is_404_never_cached_and_announced_as_failed(
    rig: Rig, upstream: MemberDirectoryServer
):
    member = new_uuid()  # the directory answers 404 for members it was not told about
    first = await rig.verify(member)
    assert first.status_code == 404 and error(first) == "member_not_found"
    assert await rig.cached(member) is None
    # The member joins: the next lookup asks the directory again and sees them.
    upstream.answer(member, Answer.json(ANN))
    joined = await rig.verify(member)
    assert joined.status_code == 200
    assert upstream.count(member) == 2
    types = [(t, d.get("reason")) for t, d in await rig.events()]
    assert types == [("member.verification_failed", "member_not_found"), ("member.verified", None)]


async def test_a_rate_limit_is_429_with_the_directorys_retry_after(
    rig: Rig, upstream: MemberDirectoryServer
):
    member = new_uuid()
    upstream.answer(member, Answer.json({"error": "slow down"}, 429, **{"Retry-After": "17"}))
    r = await rig.verify(member)
    assert r.status_code == 429 and error(r) == "upstream_rate_limited"
    assert r.headers["retry-after"] == "17"
    assert await rig.cached(member) is None
    ((kind, data),) = await rig.events()
    assert kind == "member.verification_failed" and data["reason"] == "upstream_rate_limited"


async def test_a_rate_limit_without_retry_after_gets_the_default(
    rig: Rig, upstream: MemberDirectoryServer
):
    member = new_uuid()
    upstream.answer(member, Answer(429, b""))
    r = await rig.verify(member)
    assert r.status_code == 429 and r.headers["retry-after"] == "60"


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_a_directory_error_is_503_upstream_unavailable(
    rig: Rig, upstream: MemberDirectoryServer, status: int
):
    member = new_uuid()
    upstream.answer(member, Answer(status, b"<html>oops</html>"))
    r = await rig.verify(member)
    assert r.status_code == 503 and error(r) == "upstream_unavailable"
    assert r.headers["retry-after"] == "3"
    assert str(status) in r.json()["detail"]
    ((kind, data),) = await rig.events()
    assert (kind, data["reason"]) == ("member.verification_failed", "upstream_unavailable")


@pytest.mark.parametrize(
    "body",
    [b'{"FirstName": "Ann"', b"<html>member</html>", b"[]", b'"Ann"', b'{"FirstName": 5}', b""],
    ids=["truncated", "html", "a list", "a string", "a number for a name", "empty"],
)
async def test_a_malformed_answer_is_503_upstream_invalid(
    rig: Rig, upstream: MemberDirectoryServer, body: bytes
):
    member = new_uuid()
    upstream.answer(member, Answer(200, body))
    r = await rig.verify(member)
    assert r.status_code == 503 and error(r) == "upstream_invalid"
    assert await rig.cached(member) is None


async def test_a_refused_key_is_503_upstream_unauthorized(
    rig: Rig, upstream: MemberDirectoryServer
):
    member = new_uuid()
    upstream.answer(member, Answer(401, b'{"error":"bad key"}'))
    r = await rig.verify(member)
    assert r.status_code == 503 and error(r) == "upstream_unauthorized"
    assert "HERALD_MEMBER_DIRECTORY_KEY" in r.json()["detail"]


async def test_a_redirect_is_not_followed(rig: Rig, upstream: MemberDirectoryServer):
    member = new_uuid()
    upstream.answer(member, Answer(302, b"", {"Location": f"{upstream.url}/elsewhere/{member}"}))
    r = await rig.verify(member)
    assert r.status_code == 503 and error(r) == "upstream_invalid"
    assert [s.path for s in upstream.seen(member)] == [f"/customers/{member}"]


async def test_a_closed_port_is_503_upstream_unavailable(unique: str, real_redis: aioredis.Redis):
    closed = f"http://127.0.0.1:{free_port()}"  # bound, then closed: nothing listens
    async with make_rig(unique, real_redis, member_directory_url=closed) as rig:
        r = await rig.verify(new_uuid())
        assert r.status_code == 503 and error(r) == "upstream_unavailable"
        assert "could not be reached" in r.json()["detail"]


async def test_a_directory_slower_than_the_timeout_is_503(
    unique: str, real_redis: aioredis.Redis, upstream: MemberDirectoryServer
):
    member = new_uuid()
    upstream.answer(member, Answer.json(ANN))
    upstream.hold(member)  # never released while the lookup waits
    async with make_rig(
        unique, real_redis, member_directory_url=upstream.url, member_timeout_s=0.5
    ) as rig:
        async with asyncio.timeout(20):
            r = await rig.verify(member)
        assert r.status_code == 503 and error(r) == "upstream_unavailable"
        assert "within 0.5 s" in r.json()["detail"]
        assert upstream.count(member) == 1
        ((kind, data),) = await rig.events()
        assert (kind, data["reason"]) == ("member.verification_failed", "upstream_unavailable")


# Cache, single-flight, concurrency cap.


async def test_a_cache_hit_skips_the_directory(rig: Rig, upstream: MemberDirectoryServer):
    member = new_uuid()
    upstream.answer(member, Answer.json(ANN))
    first = await rig.verify(member)
    again = await rig.verify(member, user=f"{rig.user}-other")
    assert first.json() == again.json() and again.status_code == 200
    assert upstream.count(member) == 1
    ttl = await rig.redis.ttl(verified_key(member))
    assert 14400 - 60 < ttl <= 14400
    ((kind, data),) = await rig.events(f"{rig.user}-other")
    assert kind == "member.verified" and data["cached"] is True


async def test_the_cache_lifetime_is_configurable(
    unique: str, real_redis: aioredis.Redis, upstream: MemberDirectoryServer
):
    member = new_uuid()
    upstream.answer(member, Answer.json(ANN))
    async with make_rig(
        unique, real_redis, member_directory_url=upstream.url, member_cache_s=120
    ) as rig:
        assert (await rig.verify(member)).status_code == 200
        assert 0 < await real_redis.ttl(verified_key(member)) <= 120
    await real_redis.delete(verified_key(member))


async def test_a_cache_lifetime_of_zero_caches_nothing(
    unique: str, real_redis: aioredis.Redis, upstream: MemberDirectoryServer
):
    member = new_uuid()
    upstream.answer(member, Answer.json(ANN))
    async with make_rig(
        unique, real_redis, member_directory_url=upstream.url, member_cache_s=0
    ) as rig:
        for _ in range(2):
            assert (await rig.verify(member)).status_code == 200
        assert upstream.count(member) == 2
        assert await rig.cached(member) is None


async def test_fifty_concurrent_lookups_of_one_member_make_one_call(
    rig: Rig, upstream: MemberDirectoryServer
):
    member = new_uuid()
    upstream.answer(member, Answer.json(ANN))
    upstream.hold(member)
    lookups = [asyncio.create_task(rig.verify(member)) for _ in range(50)]
    await upstream.arrived(member)
    assert rig.state.members is not None
    members = rig.state.members
    await until(lambda: members.waiting == 50)
    upstream.release(member)
    answers = await asyncio.gather(*lookups)
    assert {r.status_code for r in answers} == {200}
    assert {r.text for r in answers} == {answers[0].text}
    assert upstream.count(member) == 1
    assert len(await rig.events()) == 50


async def test_fifty_concurrent_lookups_of_an_unknown_member_make_one_call(
    rig: Rig, upstream: MemberDirectoryServer
):
    # A 404 is never cached, so only single-flight can explain a single call.
    member = new_uuid()
    upstream.hold(member)
    lookups = [asyncio.create_task(rig.verify(member)) for _ in range(50)]
    await upstream.arrived(member)
    assert rig.state.members is not None
    members = rig.state.members
    await until(lambda: members.waiting == 50)
    upstream.release(member)
    answers = await asyncio.gather(*lookups)
    assert {(r.status_code, error(r)) for r in answers} == {(404, "member_not_found")}
    assert upstream.count(member) == 1
    assert (await rig.verify(member)).status_code == 404
    assert upstream.count(member) == 2


async def test_a_waiter_that_goes_away_leaves_the_call_to_the_others(
    rig: Rig, upstream: MemberDirectoryServer
):
    member = new_uuid()
    upstream.answer(member, Answer.json(ANN))
    upstream.hold(member)
    members = rig.state.members
    assert members is not None
    leaving = asyncio.create_task(members.verify(member))
    staying = asyncio.create_task(members.verify(member))
    await upstream.arrived(member)
    await until(lambda: members.waiting == 2)
    leaving.cancel()
    await until(lambda: members.waiting == 1)
    upstream.release(member)
    lookup = await staying
    assert lookup.member.full_name == "Ann S." and not lookup.cached
    assert leaving.cancelled()
    assert upstream.count(member) == 1


async def test_calls_beyond_the_cap_are_503_busy_without_reaching_the_directory(
    unique: str, real_redis: aioredis.Redis, upstream: MemberDirectoryServer
):
    slow, other = new_uuid(), new_uuid()
    upstream.answer(slow, Answer.json(ANN))
    upstream.answer(other, Answer.json(ANN))
    upstream.hold(slow)
    async with make_rig(
        unique, real_redis, member_directory_url=upstream.url, member_max_concurrent_calls=1
    ) as rig:
        in_flight = asyncio.create_task(rig.verify(slow))
        await upstream.arrived(slow)
        r = await rig.verify(other)
        assert r.status_code == 503 and error(r) == "member_directory_busy"
        assert r.headers["retry-after"] == "1"
        assert upstream.count(other) == 0
        upstream.release(slow)
        assert (await in_flight).status_code == 200
        assert (await rig.verify(other)).status_code == 200  # the slot is free again
    await real_redis.delete(verified_key(slow), verified_key(other))


# At the door.


@pytest.mark.parametrize(
    "bad",
    [
        "not-a-uuid",
        "0b4e7a0e5fe84ad2ceb8e6d2b8cb2c4e",  # no hyphens
        "{0b4e7a0e-5fe8-4ad2-8eb8-e6d2b8cb2c4e}",
        "0b4e7a0e-5fe8-4ad2-8eb8-e6d2b8cb2c4",
        "0b4e7a0e-5fe8-4ad2-8eb8-e6d2b8cb2c4g",
    ],
)
async def test_a_malformed_uuid_is_422_and_asks_nobody(
    rig: Rig, upstream: MemberDirectoryServer, bad: str
):
    r = await rig.verify(bad)
    assert r.status_code == 422 and error(r) == "invalid_uuid"
    assert upstream.seen() == []
    assert await rig.events() == []


async def test_an_upper_case_uuid_is_looked_up_in_canonical_form(
    rig: Rig, upstream: MemberDirectoryServer
):
    member = new_uuid()
    upstream.answer(member, Answer.json(ANN))
    r = await rig.verify(member.upper())
    assert r.status_code == 200
    assert upstream.count(member) == 1


async def test_a_caller_without_a_credential_is_401(rig: Rig, upstream: MemberDirectoryServer):
    r = await rig.http.get(f"/api/members/{new_uuid()}/verification")
    assert r.status_code == 401 and error(r) == "missing_token"
    assert upstream.seen() == []


async def test_without_a_directory_the_answer_is_503_not_configured(
    unique: str, real_redis: aioredis.Redis
):
    async with make_rig(unique, real_redis, member_directory_key="") as rig:
        member = new_uuid()
        r = await rig.verify(member)
        assert r.status_code == 503 and error(r) == "member_directory_not_configured"
        ((kind, data),) = await rig.events()
        assert kind == "member.verification_failed"
        assert data == {
            "uuid": member,
            "reason": "member_directory_not_configured",
            "detail": r.json()["detail"],
        }


# Events and secrets.


async def test_events_go_only_to_the_caller(rig: Rig, upstream: MemberDirectoryServer):
    member = new_uuid()
    upstream.answer(member, Answer.json(ANN))
    assert (await rig.verify(member, user=f"{rig.user}-a")).status_code == 200
    assert [t for t, _ in await rig.events(f"{rig.user}-a")] == ["member.verified"]
    assert await rig.events(f"{rig.user}-b") == []
    assert await rig.events() == []


class DownJournal:
    """A journal whose every publish fails as if Redis were gone."""

    async def publish(self, *args: Any, **kwargs: Any) -> Any:
        raise JournalUnavailable("redis went away")


async def test_a_failed_publish_does_not_fail_the_lookup(
    rig: Rig, upstream: MemberDirectoryServer, caplog: pytest.LogCaptureFixture
):
    member, unknown = new_uuid(), new_uuid()
    upstream.answer(member, Answer.json(ANN))
    rig.state.journal = DownJournal()  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING):
        ok = await rig.verify(member)
        missing = await rig.verify(unknown)
    assert ok.status_code == 200 and ok.json()["full_name"] == "Ann S."
    assert missing.status_code == 404
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert any("member.verified" in m for m in dropped), dropped
    assert any("member.verification_failed" in m for m in dropped), dropped


async def test_the_key_appears_in_no_log_line_and_no_response(
    unique: str,
    real_redis: aioredis.Redis,
    upstream: MemberDirectoryServer,
    caplog: pytest.LogCaptureFixture,
):
    """Every outcome once, with every logger (httpx and httpcore included) at DEBUG."""
    answers = {
        new_uuid(): Answer.json(ANN),
        new_uuid(): Answer.json({}),
        new_uuid(): Answer(404, b""),
        new_uuid(): Answer(429, b"", {"Retry-After": "5"}),
        new_uuid(): Answer(500, b"oops"),
        new_uuid(): Answer(401, b""),
        new_uuid(): Answer(200, b"{not json"),
        new_uuid(): Answer(302, b"", {"Location": f"{upstream.url}/elsewhere/x"}),
    }
    for member, answer in answers.items():
        upstream.answer(member, answer)
    slow = new_uuid()
    upstream.hold(slow)
    statuses = []
    with caplog.at_level(logging.DEBUG):
        async with make_rig(
            unique, real_redis, member_directory_url=upstream.url, member_timeout_s=0.5
        ) as rig:
            for member in [*answers, slow]:
                statuses.append((await rig.verify(member)).status_code)
        async with make_rig(
            unique, real_redis, member_directory_url=f"http://127.0.0.1:{free_port()}"
        ) as rig:
            statuses.append((await rig.verify(new_uuid())).status_code)
    assert statuses == [200, 404, 404, 429, 503, 503, 503, 503, 503, 503]
    # The key was really sent, and the HTTP client's own debug lines were captured.
    assert {s.authorization for s in upstream.seen()} == {f"Basic {KEY}"}
    assert any(r.name.startswith("httpcore") for r in caplog.records)
    assert any(r.name == "httpx" for r in caplog.records)
    assert KEY not in caplog.text
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in repr(record.args)
    await real_redis.delete(*(verified_key(m) for m in answers))


async def test_memory_mode_verifies_without_a_cache(upstream: MemberDirectoryServer):
    settings = Settings.load(
        redis_url="memory://",
        jwt_secret=TEST_SECRET,
        member_directory_url=upstream.url,
        member_directory_key=KEY,
    )
    auth = Authenticator(settings)
    member = new_uuid()
    upstream.answer(member, Answer.json(ANN))
    async with open_state(settings, auth) as state:
        app = create_app(settings, state=state)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://herald.test"
        ) as http:
            headers = {"Authorization": f"Bearer {auth.issue('ann', (), 60)}"}
            for _ in range(2):
                r = await http.get(f"/api/members/{member}/verification", headers=headers)
                assert r.status_code == 200, r.text
    assert upstream.count(member) == 2


async def test_an_unreachable_cache_still_answers_from_the_directory(
    upstream: MemberDirectoryServer, caplog: pytest.LogCaptureFixture
):
    settings = Settings.load(
        redis_url="memory://",
        jwt_secret=TEST_SECRET,
        member_directory_url=upstream.url,
        member_directory_key=KEY,
    )
    broken = aioredis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    directory = make_member_directory(settings, broken)
    assert directory is not None
    member = new_uuid()
    upstream.answer(member, Answer.json(ANN))
    try:
        with caplog.at_level(logging.WARNING):
            lookup = await directory.verify(member)
    finally:
        await directory.aclose()
        await broken.aclose()
    assert lookup.member.full_name == "Ann S." and not lookup.cached
    messages = [r.getMessage() for r in caplog.records]
    assert any("cache read failed" in m for m in messages), messages
    assert any("cache write failed" in m for m in messages), messages

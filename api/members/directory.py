"""The member directory client: one upstream call per member at a time, cached.

``MemberDirectory.verify(uuid)`` answers from the Redis cache of verified members,
else asks the directory (``GET {root}/customers/{uuid}`` with ``Authorization:
Basic {key}``).  Concurrent lookups of one member in this process share one call
(single-flight), and at most ``max_calls`` calls run at once: beyond that a lookup
fails at once with ``DirectoryBusy`` rather than queueing behind a slow directory.
Every failure is a ``MemberLookupError`` whose ``code`` names it; nothing else
escapes.  The key is read only to build the request's header, and no message,
log line or error carries it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

import httpx
import orjson
import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.exceptions import RedisError

from herald.api.members.keys import verified_key
from herald.api.members.mapping import InvalidMember, Member, member_from_body, retry_after_s
from herald.journal.runtime.settings import Settings

__all__ = [
    "DirectoryBusy",
    "DirectoryNotConfigured",
    "Lookup",
    "MemberDirectory",
    "MemberLookupError",
    "MemberNotFound",
    "UpstreamInvalid",
    "UpstreamRateLimited",
    "UpstreamUnauthorized",
    "UpstreamUnavailable",
    "make_member_directory",
]

log = logging.getLogger("herald.api.members")

DEFAULT_RETRY_AFTER_S = 60  # the directory said 429 without saying how long
UNAVAILABLE_RETRY_AFTER_S = 3
MAX_BODY_BYTES = 1024 * 1024  # a member record is a few KiB


class MemberLookupError(Exception):
    """A lookup that produced no verified member; ``code`` says why."""

    code = "member_lookup_failed"
    retry_after_s: int | None = None


class MemberNotFound(MemberLookupError):
    """The directory does not know the member (404, or 200 with an empty record)."""

    code = "member_not_found"


class DirectoryNotConfigured(MemberLookupError):
    code = "member_directory_not_configured"


class DirectoryBusy(MemberLookupError):
    """This process already has ``max_calls`` calls to the directory in flight."""

    code = "member_directory_busy"
    retry_after_s = 1


class UpstreamRateLimited(MemberLookupError):
    code = "upstream_rate_limited"

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class UpstreamUnavailable(MemberLookupError):
    """Unreachable, too slow, or a 5xx."""

    code = "upstream_unavailable"
    retry_after_s = UNAVAILABLE_RETRY_AFTER_S


class UpstreamUnauthorized(MemberLookupError):
    """The directory refused Herald's key (401/403): the operator must fix it."""

    code = "upstream_unauthorized"


class UpstreamInvalid(MemberLookupError):
    """An answer Herald cannot use: malformed JSON, a redirect, an unexpected status."""

    code = "upstream_invalid"


@dataclass(frozen=True, slots=True)
class Lookup:
    member: Member
    cached: bool  # answered from the cache, without calling the directory


class MemberDirectory:
    """Lookups against one directory, sharing one HTTP client (closed by ``aclose``)."""

    def __init__(
        self,
        root: str,
        key: SecretStr,
        *,
        http: httpx.AsyncClient,
        redis: aioredis.Redis | None,
        cache_s: int,
        timeout_s: float,
        max_calls: int,
    ) -> None:
        self.root = root.rstrip("/")
        self._key = key
        self._http = http
        self._redis = redis
        self.cache_s = cache_s
        self.timeout_s = timeout_s
        self.max_calls = max_calls
        self._flights: dict[str, asyncio.Task[Lookup]] = {}
        self.calls = 0  # calls to the directory in flight now
        self.waiting = 0  # lookups waiting for a result (each shares its member's flight)

    async def verify(self, member_uuid: str) -> Lookup:
        """The verified member ``member_uuid`` (canonical form), or a ``MemberLookupError``.

        The first lookup of a member starts its flight; lookups arriving before it
        lands wait for the same result.  A waiter that is cancelled (its client went
        away) leaves the flight running for the others.
        """
        flight = self._flights.get(member_uuid)
        if flight is None:
            flight = asyncio.create_task(self._lookup(member_uuid), name=f"member {member_uuid}")
            self._flights[member_uuid] = flight
            flight.add_done_callback(partial(self._landed, member_uuid))
        self.waiting += 1
        try:
            return await asyncio.shield(flight)
        finally:
            self.waiting -= 1

    def _landed(self, member_uuid: str, flight: asyncio.Task[Lookup]) -> None:
        if self._flights.get(member_uuid) is flight:
            del self._flights[member_uuid]
        if not flight.cancelled():
            flight.exception()  # retrieved here: every waiter may have gone

    async def aclose(self) -> None:
        for flight in list(self._flights.values()):
            flight.cancel()
        await asyncio.gather(*self._flights.values(), return_exceptions=True)
        await self._http.aclose()

    async def _lookup(self, member_uuid: str) -> Lookup:
        cached = await self._cached(member_uuid)
        if cached is not None:
            return Lookup(cached, cached=True)
        member = await self._call(member_uuid)
        await self._remember(member_uuid, member)
        return Lookup(member, cached=False)

    async def _cached(self, member_uuid: str) -> Member | None:
        if self._redis is None or self.cache_s == 0:
            return None
        try:
            raw = await self._redis.get(verified_key(member_uuid))
        except (RedisError, OSError) as e:
            # The cache only saves calls: without Redis the directory still answers.
            log.warning("member cache read failed, asking the directory: %s", e)
            return None
        if raw is None:
            return None
        try:
            return Member.from_json(orjson.loads(raw))
        except (orjson.JSONDecodeError, InvalidMember) as e:
            log.warning("ignoring unreadable cached member %s: %s", member_uuid, e)
            return None

    async def _remember(self, member_uuid: str, member: Member) -> None:
        if self._redis is None or self.cache_s == 0:
            return
        try:
            await self._redis.set(
                verified_key(member_uuid), orjson.dumps(member.to_json()), ex=self.cache_s
            )
        except (RedisError, OSError) as e:
            log.warning("member cache write failed (the answer stands): %s", e)

    async def _call(self, member_uuid: str) -> Member:
        if self.calls >= self.max_calls:
            raise DirectoryBusy(
                f"{self.calls} calls to the member directory are already in flight; retry shortly"
            )
        self.calls += 1
        try:
            # httpx's timeouts bound each phase; this bounds the whole call, so a
            # directory trickling bytes cannot hold a slot for longer.
            async with asyncio.timeout(self.timeout_s):
                status, headers, body = await self._get(member_uuid)
        except (TimeoutError, httpx.TimeoutException) as e:
            log.warning("member directory: no answer for %s in %g s", member_uuid, self.timeout_s)
            raise UpstreamUnavailable(
                f"the member directory did not answer within {self.timeout_s:g} s"
            ) from e
        except httpx.HTTPError as e:
            log.warning("member directory unreachable for %s: %r", member_uuid, e)
            raise UpstreamUnavailable(
                f"the member directory could not be reached ({type(e).__name__})"
            ) from e
        finally:
            self.calls -= 1
        return self._answer(member_uuid, status, headers, body)

    async def _get(self, member_uuid: str) -> tuple[int, httpx.Headers, bytes | None]:
        """Status, headers and body (None when larger than ``MAX_BODY_BYTES``)."""
        headers = {"Authorization": f"Basic {self._key.get_secret_value()}"}
        url = f"{self.root}/customers/{member_uuid}"
        async with self._http.stream("GET", url, headers=headers) as response:
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    return response.status_code, response.headers, None
                chunks.append(chunk)
            return response.status_code, response.headers, b"".join(chunks)

    def _answer(
        self, member_uuid: str, status: int, headers: httpx.Headers, body: bytes | None
    ) -> Member:
        if status == 404:
            raise MemberNotFound(f"no member {member_uuid} in the member directory")
        if status == 429:
            wait = retry_after_s(
                headers.get("retry-after"), datetime.now(UTC), DEFAULT_RETRY_AFTER_S
            )
            log.warning("member directory rate-limited Herald (retry after %d s)", wait)
            raise UpstreamRateLimited(
                f"the member directory is rate-limiting lookups; retry in {wait} s", wait
            )
        if status >= 500:
            log.warning("member directory answered %d for %s", status, member_uuid)
            raise UpstreamUnavailable(f"the member directory answered HTTP {status}")
        if status in (401, 403):
            log.error("member directory refused the configured key (HTTP %d)", status)
            raise UpstreamUnauthorized(
                f"the member directory refused Herald's key (HTTP {status}); "
                "check HERALD_MEMBER_DIRECTORY_KEY"
            )
        if status != 200:
            log.warning("member directory answered %d for %s", status, member_uuid)
            raise UpstreamInvalid(f"the member directory answered HTTP {status}, expected 200")
        if body is None:
            raise UpstreamInvalid(f"the member directory's answer is over {MAX_BODY_BYTES} bytes")
        try:
            member = member_from_body(orjson.loads(body))
        except orjson.JSONDecodeError as e:
            log.warning("member directory sent malformed JSON for %s: %s", member_uuid, e)
            raise UpstreamInvalid("the member directory's answer is not valid JSON") from e
        except InvalidMember as e:
            log.warning("member directory sent an unusable record for %s: %s", member_uuid, e)
            raise UpstreamInvalid(f"the member directory's answer is not a member: {e}") from e
        if member is None:
            raise MemberNotFound(f"the member directory has an empty record for {member_uuid}")
        return member


def make_member_directory(
    settings: Settings, redis: aioredis.Redis | None
) -> MemberDirectory | None:
    """The directory the settings name (None when none is configured).  Its one HTTP
    client follows no redirects (the key must not travel to another address) and
    ignores proxy variables and ``.netrc`` for the same reason."""
    if not settings.member_directory_url or settings.member_directory_key is None:
        return None
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(settings.member_timeout_s),
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_connections=settings.member_max_concurrent_calls),
        headers={"Accept": "application/json", "User-Agent": "Herald"},
    )
    return MemberDirectory(
        settings.member_directory_url,
        settings.member_directory_key,
        http=http,
        redis=redis,
        cache_s=settings.member_cache_s,
        timeout_s=settings.member_timeout_s,
        max_calls=settings.member_max_concurrent_calls,
    )

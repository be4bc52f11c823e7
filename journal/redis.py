"""The journal on Redis Streams: one Lua round trip appends, trims, updates metadata
and publishes (see ``lua/publish.lua`` for the atomicity and id rules)."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from herald.journal.base import (
    Entry,
    JournalLimits,
    JournalUnavailable,
    Page,
    PublishRequest,
    PublishResult,
    StreamInfo,
    new_epoch,
    prepare_requests,
)
from herald.journal.envelope import Prepared
from herald.journal.positions import ZERO_ID, StreamId, Target
from herald.journal.runtime.metrics import count_published
from herald.journal.runtime.scripts import evalsha_pipelined
from herald.journal.runtime.sharded import publish_script
from herald.journal.wire import lua_frame_args

__all__ = ["RedisJournal"]

# One script call appends at most this many envelopes, so a huge batch cannot
# hold Redis's single thread for long.
_CHUNK = 256
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def _sid(raw: bytes | str) -> StreamId | None:
    text = raw.decode() if isinstance(raw, bytes) else raw
    return StreamId.parse(text) if text else None


class _Ids:
    """Parses ids our own script wrote (split, not regex-validated).  In a chain of
    entries each previous id is the id parsed just before, so that one is reused."""

    __slots__ = ("id", "raw")

    def __init__(self) -> None:
        self.raw, self.id = b"", ZERO_ID

    def get(self, raw: bytes) -> StreamId | None:
        if not raw:
            return None
        if raw != self.raw:
            self.raw, self.id = raw, StreamId.from_bytes(raw)
        return self.id


def _entries(rows: list[Any]) -> list[Entry]:
    ids = _Ids()
    out = []
    for raw_id, fields in rows:
        previous = ids.get(fields.get(b"p", b""))
        sid = ids.get(raw_id)
        assert sid is not None
        out.append(Entry(sid, previous, fields[b"t"].decode(), fields[b"e"]))
    return out


class RedisJournal:
    """Journal on a ``redis.asyncio.Redis`` client built by the caller (bytes responses)."""

    def __init__(self, client: aioredis.Redis, limits: JournalLimits | None = None) -> None:
        self.client = client
        self.limits = limits or JournalLimits()
        source = resources.files("herald.journal").joinpath("lua/publish.lua").read_text()
        self._script = client.register_script(publish_script(source, client))

    def _call_args(
        self, target: Target, items: Sequence[tuple[Prepared, str | None]]
    ) -> tuple[list[str], list[Any]]:
        keys = [target.stream_key, target.meta_key]
        argv: list[Any] = [
            self.limits.stream_maxlen,
            self.limits.idempotency_window_s,
            new_epoch(),
            target.channel,
            *lua_frame_args(),
            len(items),
        ]
        for prepared, idem in items:
            # bytes pass through redis-py's encoder untouched; str and int are converted.
            if idem is None:
                argv += (prepared.type.encode(), prepared.tail, b"0")
            else:
                keys.append(target.idempotency_key(idem))
                argv += (prepared.type.encode(), prepared.tail, len(keys))
        return keys, argv

    @staticmethod
    def _results(target: Target, reply: list[Any]) -> list[PublishResult]:
        epoch = reply[-1].decode()
        ids, out = _Ids(), []
        for i in range(0, len(reply) - 1, 3):
            previous = ids.get(reply[i + 1])
            sid = ids.get(reply[i])
            assert sid is not None
            out.append(PublishResult(sid, target, previous, reply[i + 2] == 1, epoch))
        return out

    async def publish(
        self,
        target: Target,
        type_: str,
        data: dict[str, Any],
        *,
        source: str | None = None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        req = PublishRequest(target, type_, data, source, idempotency_key)
        (prepared,) = prepare_requests(self.limits, [req])
        keys, argv = self._call_args(target, [(prepared, idempotency_key)])
        try:
            reply = await self._script(keys=keys, args=argv)
        except _UNAVAILABLE as e:
            raise JournalUnavailable(f"Redis unavailable: {e}") from e
        result = self._results(target, reply)[0]
        if not result.duplicate:
            count_published((type_,))
        return result

    async def publish_many(self, requests: Sequence[PublishRequest]) -> list[PublishResult]:
        prepared = prepare_requests(self.limits, requests)
        # Group by stream (keeping request order inside each group): one script call
        # per group chunk, all calls in one pipeline.
        groups: dict[Target, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.target, []).append(i)
        calls: list[tuple[Target, list[int]]] = []
        for target, indexes in groups.items():
            for start in range(0, len(indexes), _CHUNK):
                calls.append((target, indexes[start : start + _CHUNK]))
        try:
            replies = await self._pipeline_calls(calls, requests, prepared)
        except _UNAVAILABLE as e:
            raise JournalUnavailable(f"Redis unavailable: {e}") from e
        results: list[PublishResult | None] = [None] * len(requests)
        for (target, chunk), reply in zip(calls, replies, strict=True):
            for i, result in zip(chunk, self._results(target, reply), strict=True):
                results[i] = result
        count_published(
            q.type for q, r in zip(requests, results, strict=True) if r and not r.duplicate
        )
        return [r for r in results if r is not None]

    async def _pipeline_calls(
        self,
        calls: list[tuple[Target, list[int]]],
        requests: Sequence[PublishRequest],
        prepared: list[Prepared],
    ) -> list[Any]:
        return await evalsha_pipelined(
            self.client,
            self._script,
            [
                self._call_args(target, [(prepared[i], requests[i].idempotency_key) for i in chunk])
                for target, chunk in calls
            ],
        )

    async def read_after(self, target: Target, after: StreamId, *, limit: int) -> Page:
        if after.is_max:
            return Page((await self.info(target)).epoch, [])
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hget(target.meta_key, "epoch")
                pipe.xrange(target.stream_key, f"({after}", "+", count=limit)
                epoch, rows = await pipe.execute()
        except _UNAVAILABLE as e:
            raise JournalUnavailable(f"Redis unavailable: {e}") from e
        return Page(epoch.decode() if epoch else None, _entries(rows))

    async def latest(
        self, target: Target, type_prefix: str, *, max_scan: int = 10000
    ) -> Entry | None:
        # Walk back in pages; the type is its own field, so no envelope is parsed.
        upper, scanned, page = "+", 0, 200
        try:
            while scanned < max_scan:
                rows: Any = await self.client.xrevrange(
                    target.stream_key, upper, "-", count=min(page, max_scan - scanned)
                )
                if not rows:
                    return None
                for raw_id, fields in rows:
                    if fields[b"t"].decode().startswith(type_prefix):
                        return _entries([(raw_id, fields)])[0]
                scanned += len(rows)
                upper = f"({rows[-1][0].decode()}"
        except _UNAVAILABLE as e:
            raise JournalUnavailable(f"Redis unavailable: {e}") from e
        return None

    async def info(self, target: Target) -> StreamInfo:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hmget(target.meta_key, ["epoch", "last"])
                pipe.xrange(target.stream_key, "-", "+", count=1)
                pipe.xlen(target.stream_key)
                (epoch, last), first, length = await pipe.execute()
        except _UNAVAILABLE as e:
            raise JournalUnavailable(f"Redis unavailable: {e}") from e
        return StreamInfo(
            epoch=epoch.decode() if epoch else None,
            last=_sid(last) if last else None,
            first=StreamId.parse(first[0][0].decode()) if first else None,
            length=int(length),
        )

    async def aclose(self) -> None:
        await self.client.aclose()

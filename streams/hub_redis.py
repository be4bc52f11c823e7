"""The hub on Redis pub/sub: one dedicated connection per process, one reader task.

Reconnects are ours, not redis-py's: the hub's client has retries off, so a
dropped connection surfaces here, where we can (1) open a new connection,
(2) re-subscribe every channel that has subscribers, (3) wait until Redis has
confirmed them all, and only then (4) tell every subscriber to RESYNC from the
journal.  In that order, nothing published during the outage is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from streams.hub import Registry, Subscription, parse_frame

__all__ = ["HubUnavailable", "RedisHub"]

log = logging.getLogger("herald.hub")

_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 2.0


class HubUnavailable(Exception):
    """The pub/sub connection could not confirm a subscription in time."""


class RedisHub:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        ping_interval_s: float = 5.0,
        subscribe_timeout_s: float = 5.0,
    ) -> None:
        """``client`` must be dedicated to the hub: no socket timeout, no retries."""
        self._client = client
        self._ping_interval_s = ping_interval_s
        self._subscribe_timeout_s = subscribe_timeout_s
        self._registry = Registry()
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._control = f"herald:hub:{secrets.token_hex(8)}"
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connected = False
        self._reconnects = 0
        self._ready = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def reconnects(self) -> int:
        return self._reconnects

    @property
    def channels(self) -> int:
        return len(self._registry)

    async def start(self) -> None:
        """Start the reader and wait for the first connection (HubUnavailable after the
        subscribe timeout; the reader keeps trying in the background either way)."""
        if self._reader is None:
            self._reader = asyncio.create_task(self._run(), name="herald-hub-reader")
        try:
            await asyncio.wait_for(self._ready.wait(), self._subscribe_timeout_s)
        except TimeoutError as e:
            raise HubUnavailable("pub/sub connection not established") from e

    @contextlib.asynccontextmanager
    async def subscribe(self, channels: Sequence[str], maxsize: int) -> AsyncIterator[Subscription]:
        sub = Subscription(tuple(channels), maxsize)
        loop = asyncio.get_running_loop()
        new = self._registry.add(sub)
        try:
            for ch in new:
                self._pending.setdefault(ch, loop.create_future())
            if new and self._pubsub is not None and self._connected:
                # If this write fails the reader reconnects and re-subscribes
                # every registered channel, ours included, and confirms it.
                with contextlib.suppress(RedisError, OSError):
                    await self._pubsub.subscribe(*new)
            waiting = [self._pending[ch] for ch in sub.channels if ch in self._pending]
            if waiting:
                try:
                    await asyncio.wait_for(
                        asyncio.shield(asyncio.gather(*waiting)), self._subscribe_timeout_s
                    )
                except TimeoutError as e:
                    raise HubUnavailable("Redis did not confirm the subscription") from e
            yield sub
        finally:
            empty = self._registry.remove(sub)
            if empty and self._pubsub is not None and self._connected:
                with contextlib.suppress(RedisError, OSError):
                    await asyncio.shield(self._pubsub.unsubscribe(*empty))

    async def _run(self) -> None:
        backoff = _BACKOFF_MIN_S
        first = True
        while True:
            try:
                await self._connect_and_read(first)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, ConnectionError) as e:
                if self._connected or first:
                    log.warning("pub/sub connection lost: %s; reconnecting", e)
            finally:
                self._connected = False
                await self._drop_pubsub()
            first = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _connect_and_read(self, first: bool) -> None:
        pubsub = self._client.pubsub()
        # Publish the new connection before snapshotting the registry: a subscriber
        # registering from now on sends its SUBSCRIBE on this connection.
        self._pubsub = pubsub
        awaiting = {self._control, *self._registry.by_channel}
        await pubsub.subscribe(*awaiting)
        last_seen = time.monotonic()
        while True:
            message = await pubsub.get_message(timeout=self._ping_interval_s)
            now = time.monotonic()
            if message is None:
                if now - last_seen > 3 * self._ping_interval_s:
                    raise ConnectionError("no answer to pings: connection presumed dead")
                await pubsub.ping()
                continue
            last_seen = now
            kind = message["type"]
            if kind == "message":
                channel = message["channel"].decode()
                try:
                    self._registry.deliver(parse_frame(channel, message["data"]))
                except (ValueError, IndexError):
                    log.error("malformed frame on %s dropped: %r", channel, message["data"][:80])
            elif kind == "subscribe":
                channel = message["channel"].decode()
                awaiting.discard(channel)
                self._confirm(channel)
                if not awaiting and not self._connected:
                    self._on_connected(first)

    def _confirm(self, channel: str) -> None:
        fut = self._pending.pop(channel, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _on_connected(self, first: bool) -> None:
        self._connected = True
        self._ready.set()
        if not first:
            self._reconnects += 1
            log.info("pub/sub reconnected; %d channels resubscribed", len(self._registry))
        # Even the first connection may follow failed attempts during which
        # subscribers registered; they are waiting on confirmations, not data.
        if not first:
            self._registry.resync_all()

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def close_all(self) -> None:
        self._registry.close_all()

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        await self._drop_pubsub()
        await self._client.aclose()

    def stats(self) -> dict[str, Any]:
        return {
            "connected": self._connected,
            "reconnects": self._reconnects,
            "channels": len(self._registry),
        }

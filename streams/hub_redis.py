"""The hub on Redis pub/sub: one dedicated connection per process, one reader task.

The connection is a bare redis-py ``Connection`` that only this module connects.
(redis-py's ``PubSub`` reconnects inside a failing read even with retries off;
a SUBSCRIBE sent by another task at that moment started a second connect on the
same socket and killed the reader.)  The rules:

* Only the reader task connects, and it does so holding ``_lock``; every SUBSCRIBE
  or UNSUBSCRIBE is sent holding ``_lock`` too, and only on the live connection.
  So commands reach Redis in the order subscribers asked for them, and none is
  ever written to a half-dead connection.
* After (re)connecting, the reader subscribes every channel that has
  subscribers, waits until Redis confirmed them all, and only then tells every
  subscriber to RESYNC from the journal: nothing published during the outage is
  missed.  A subscriber that registers meanwhile either is in that snapshot or
  sends its own SUBSCRIBE on the new connection (both happen under ``_lock``).
* The reader survives anything but cancellation: every failure is logged and
  followed by a reconnect with backoff (reset after each success).
* Liveness: an idle connection is pinged every ``ping_interval_s``; a PING not
  answered within ``pong_timeout_s`` means Redis is dead or frozen, not merely
  quiet.  Then every subscription is ended (CLOSE), so clients reconnect — to
  another process if this one's Redis stays away — instead of waiting on a
  stream that can deliver nothing.  (A connection that merely drops is
  reconnected and resynced as above: its subscribers lose nothing.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence

from herald.journal.runtime.metrics import HUB_RECONNECTS
from herald.journal.wire import FrameError
from herald.streams.hub import LiveMessage, Registry, Subscribing, Subscription, parse_frame
from herald.streams.keys import hub_control_channel
from herald.streams.pubsub import PubSubConnection

__all__ = ["HubUnavailable", "RedisHub"]

log = logging.getLogger("herald.hub")

_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 2.0
# Subscribers served between two turns of the event loop (see _fan_out).  Small:
# at saturation (bench/fanout.py, 1,000 subscribers) 100 let HTTP publishes through
# twice as fast as 1,000, so bursts grew and twice the deliveries/s went out (fewer
# writes per event); a turn of the loop costs about as much as one delivery.
_FANOUT_STEP = 100
# Most messages read ahead of the fan-out (one burst); the reader waits beyond that.
_BURST_MAX = 128


class HubUnavailable(Exception):
    """The pub/sub connection could not confirm a subscription in time."""


class RedisUnresponsive(ConnectionError):
    """Redis accepted the connection but does not answer (frozen or overloaded)."""


class RedisHub:
    def __init__(
        self,
        connect: Callable[[], PubSubConnection],
        *,
        ping_interval_s: float = 5.0,
        subscribe_timeout_s: float = 5.0,
        pong_timeout_s: float | None = None,
    ) -> None:
        """``connect`` makes a new, unconnected redis-py connection (no socket timeout)."""
        self._make_connection = connect
        self._ping_interval_s = ping_interval_s
        self._pong_timeout_s = subscribe_timeout_s if pong_timeout_s is None else pong_timeout_s
        self._subscribe_timeout_s = subscribe_timeout_s
        self._registry = Registry()
        self._control = hub_control_channel(secrets.token_hex(8))
        self._lock = asyncio.Lock()
        self._conn: PubSubConnection | None = None  # set while commands may be sent
        # SUBSCRIBE sent on the current connection; confirmed once no reply is due.
        self._sent: set[str] = set()
        # SUBSCRIBE replies still to come per channel: after a quick leave and
        # rejoin, the first reply belongs to the old SUBSCRIBE, not the new one.
        self._outstanding: Counter[str] = Counter()
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._connected = False
        self._reconnects = 0
        self._ready = asyncio.Event()
        self._work = 0  # subscribers served since the fan-out last let others run
        self._pending: list[LiveMessage] = []  # read, not yet fanned out: the next burst
        self._fanning: asyncio.Task[None] | None = None  # the fan-out task, while it runs
        self._room: asyncio.Future[None] | None = None  # the reader waits on it when full

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def reconnects(self) -> int:
        return self._reconnects

    async def start(self) -> None:
        """Start the reader and wait for the first connection (HubUnavailable after the
        subscribe timeout; the reader keeps trying in the background either way)."""
        if self._reader is None:
            self._reader = asyncio.create_task(self._run(), name="herald-hub-reader")
        try:
            await asyncio.wait_for(self._ready.wait(), self._subscribe_timeout_s)
        except TimeoutError as e:
            raise HubUnavailable("pub/sub connection not established") from e

    def subscribe(self, channels: Sequence[str], maxsize: int) -> Subscribing:
        return Subscribing(Subscription(tuple(channels), maxsize), self._join, self._leave)

    def close_all(self) -> None:
        self._registry.close_all()

    # -- subscribers ----------------------------------------------------------

    async def _join(self, sub: Subscription) -> None:
        self._registry.add(sub)
        try:
            async with self._lock:
                need = [ch for ch in sub.channels if ch not in self._sent]
                if need and self._conn is not None:
                    await self._send("SUBSCRIBE", need)
            loop = asyncio.get_running_loop()
            waiting = [
                self._waiters.setdefault(ch, loop.create_future())
                for ch in sub.channels
                if not self._confirmed(ch)
            ]
            if waiting:
                try:
                    await asyncio.wait_for(
                        asyncio.shield(asyncio.gather(*waiting)), self._subscribe_timeout_s
                    )
                except TimeoutError as e:
                    raise HubUnavailable("Redis did not confirm the subscription") from e
        except BaseException:
            await self._leave(sub)
            raise

    async def _leave(self, sub: Subscription) -> None:
        if not self._registry.remove(sub):
            return
        async with self._lock:
            # Re-check under the lock: another subscriber may have taken the
            # channel again meanwhile, and must keep it.
            unwanted = [ch for ch in sub.channels if ch not in self._registry.by_channel]
            for ch in unwanted:
                waiter = self._waiters.pop(ch, None)
                if waiter is not None and not waiter.done():
                    waiter.cancel()
            gone = [ch for ch in unwanted if ch in self._sent]
            if gone and self._conn is not None:
                self._sent.difference_update(gone)
                await self._send("UNSUBSCRIBE", gone)

    def _confirmed(self, channel: str) -> bool:
        return channel in self._sent and channel not in self._outstanding

    async def _send(self, command: str, channels: list[str]) -> None:
        """Write on the live connection; call holding ``_lock``.  A failure is left to
        the reader, which re-subscribes every registered channel on reconnect."""
        conn = self._conn
        if conn is None or not conn.is_connected:
            return
        if command == "SUBSCRIBE":
            self._sent.update(channels)
            self._outstanding.update(channels)
        try:
            await conn.send_command(command, *channels, check_health=False)
        except Exception as e:  # the reader sees the same failure and reconnects
            log.debug("%s not sent: %s", command, e)

    # -- the reader -----------------------------------------------------------

    async def _run(self) -> None:
        backoff = _BACKOFF_MIN_S
        first = True
        while True:
            conn = self._make_connection()
            try:
                await self._read(conn, first)
            except asyncio.CancelledError:
                raise
            except RedisUnresponsive as e:
                log.warning("pub/sub: %s; ending %d streams", e, len(self._registry))
                self._registry.close_all()
            except Exception as e:
                log.warning("pub/sub connection lost (%s: %s); reconnecting", type(e).__name__, e)
            finally:
                was_connected = self._connected
                self._connected = False
                async with self._lock:
                    self._conn = None
                    self._sent.clear()
                    self._outstanding.clear()
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
            # Messages read before the loss are delivered before any RESYNC.
            await self._drain()
            if was_connected:
                backoff = _BACKOFF_MIN_S
                first = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _read(self, conn: PubSubConnection, first: bool) -> None:
        async with self._lock:
            # Bounded: a frozen Redis accepts the TCP connection, then never answers
            # the handshake (and subscribers wait on this lock meanwhile).
            try:
                async with asyncio.timeout(self._pong_timeout_s):
                    await conn.connect()
            except TimeoutError as e:
                raise RedisUnresponsive("Redis did not complete the connection") from e
            self._conn = conn
            awaiting = {self._control, *self._registry.by_channel}
            await self._send("SUBSCRIBE", sorted(awaiting))
        asked: float | None = time.monotonic()  # when the oldest unanswered request went out
        while True:
            # push_request: pub/sub replies are returned, not handed to a push handler.
            wait = (
                self._ping_interval_s
                if asked is None
                else max(0.01, asked + self._pong_timeout_s - time.monotonic())
            )
            reply = await conn.read_response(timeout=wait, push_request=True)
            now = time.monotonic()
            if reply is None:
                if asked is not None:
                    if now - asked >= self._pong_timeout_s:
                        raise RedisUnresponsive(
                            f"no answer within {self._pong_timeout_s:g} s: Redis is down or frozen"
                        )
                    continue
                asked = now
                async with self._lock:
                    # redis-py would silently reconnect a closed connection here (one
                    # a failed SUBSCRIBE closed), with no subscriptions on it.
                    if not conn.is_connected:
                        raise ConnectionError("pub/sub connection closed")
                    await conn.send_command("PING", check_health=False)
                continue
            asked = None  # any reply shows Redis is alive
            kind = reply[0]
            if kind == b"message":
                self._enqueue(reply[1].decode(), reply[2])
                if len(self._pending) >= _BURST_MAX:
                    self._room = asyncio.get_running_loop().create_future()
                    await self._room
            elif kind == b"subscribe":
                channel = reply[1].decode()
                self._outstanding[channel] -= 1
                if self._outstanding[channel] <= 0:
                    del self._outstanding[channel]
                if self._confirmed(channel):
                    waiter = self._waiters.pop(channel, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                awaiting.discard(channel)
                if not awaiting and not self._connected:
                    await self._drain()
                    self._on_connected(first)

    def _enqueue(self, channel: str, frame: bytes) -> None:
        """Add one live frame to the next burst, and start the fan-out if it is idle.

        The reader reads on while the fan-out runs (it pauses every ``_FANOUT_STEP``
        subscribers): when the hub is behind, everything that arrived meanwhile is the
        next burst, and each subscriber gets it in one write (``Registry.deliver_in_steps``).
        When it keeps up, a burst is one message, delivered as soon as it is read."""
        try:
            message = parse_frame(channel, frame)
        except FrameError:
            log.error("malformed frame on %s dropped: %r", channel, frame[:80])
            return
        self._pending.append(message)
        if self._fanning is None:
            self._fanning = asyncio.create_task(self._fan_out(), name="herald-hub-fan-out")

    async def _fan_out(self) -> None:
        """Deliver the pending bursts until none is left.  The work is bounded per
        event-loop turn: after every ``_FANOUT_STEP`` subscribers (within one burst or
        over several), other tasks run (the reader, HTTP publishes, new connections,
        the subscribers' own tasks), so a busy fan-out cannot starve them."""
        registry = self._registry
        try:
            while self._pending:
                burst, self._pending = self._pending, []
                room = self._room
                if room is not None and not room.done():
                    room.set_result(None)
                self._room = None
                for _ in registry.deliver_in_steps(burst, _FANOUT_STEP):
                    await asyncio.sleep(0)
                    self._work = 0
                self._work += len(burst) * max(1, len(registry.subscribers(burst[0].channel)))
                if self._work >= _FANOUT_STEP:
                    self._work = 0
                    await asyncio.sleep(0)
        except Exception:  # never leave the reader waiting on a dead fan-out
            log.exception("live fan-out failed; every subscriber re-reads its journal")
            self._pending = []
            # Some subscribers missed messages read so far: the journal has them.
            registry.resync_all()
            room = self._room
            if room is not None and not room.done():
                room.set_result(None)
        finally:
            self._fanning = None

    async def _drain(self) -> None:
        """Wait until every message read so far has been fanned out."""
        while self._fanning is not None:
            await asyncio.shield(self._fanning)

    def _on_connected(self, first: bool) -> None:
        self._connected = True
        self._ready.set()
        if not first:
            self._reconnects += 1
            HUB_RECONNECTS.inc()
            log.info("pub/sub reconnected; %d channels resubscribed", len(self._registry))
            # Everything published while we were away is in the journal.
            self._registry.resync_all()

    async def aclose(self) -> None:
        if self._fanning is not None:
            self._fanning.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

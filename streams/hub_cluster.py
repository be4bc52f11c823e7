"""Sharded pub/sub on Redis Cluster, behind the connection the hub already reads.

``RedisHub`` holds one pub/sub connection and reconnects it when it fails.  On a
cluster that "connection" is a ``ShardedConnection``: it subscribes on the link
to each primary that the command client uses too (``journal.runtime.multiplex``:
RESP3, where pub/sub messages are pushes beside the command replies, so one
socket per primary carries both), and reads every primary's pushes into one
inbox the hub reads.  The hub's commands are translated on the way out, the
replies on the way back::

    SUBSCRIBE a b c    ->  SSUBSCRIBE per slot, to the primary serving the slot
    UNSUBSCRIBE a b    ->  SUNSUBSCRIBE likewise
    PING               ->  PING on every primary
    smessage/ssubscribe/sunsubscribe  ->  message/subscribe/unsubscribe

The rule that keeps delivery exact: anything that means "the slot map we
subscribed by is no longer true" fails the whole connection, exactly like a lost
socket.  The hub then makes a new ``ShardedConnection`` (which reads the slot map
afresh), subscribes every channel again, waits for every confirmation, and tells
every subscriber to RESYNC from the journal.  Those events are:

* a connection to a primary breaks, or stops answering pings;
* an ``SUNSUBSCRIBE`` nobody asked for: Redis sends one for every shard channel of
  a slot that moved away (resharding) or whose node stopped being its primary
  (failover: the promoted replica serves it now);
* an error reply (``MOVED``, ``ASK``, ``CLUSTERDOWN``, …) to an ``SSUBSCRIBE``
  sent by a stale slot map.

A failure on one shard resubscribes all of them: simpler than tracking which
subscriber reads which shard, and a failover is rare next to the journal reads a
RESYNC costs (one page per active stream).

A link outlives the ``ShardedConnection`` that subscribed on it (it carries the
commands): ending one unsubscribes its channels and drops every push still on
the way, so the next one starts as on a fresh socket.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

from redis.asyncio.connection import parse_url
from redis.crc import key_slot
from redis.exceptions import ResponseError

from herald.journal.runtime.cluster import node_address, node_links
from herald.journal.runtime.multiplex import NodeLink, NodeLinks
from herald.journal.runtime.settings import Settings

__all__ = ["ShardedConnection", "ShardedConnections", "SlotMap", "SlotMoved", "slot_of"]

log = logging.getLogger("herald.hub")

Address = tuple[str, int]


class SlotMoved(ConnectionError):
    """The cluster's slot map changed under a subscription: subscribe again."""


def slot_of(channel: str) -> int:
    """The hash slot of a shard channel (its ``{tag}`` decides, as for keys)."""
    return int(key_slot(channel.encode()))


class SlotMap:
    """Which primary serves each slot, from one ``CLUSTER SLOTS`` reply."""

    def __init__(self, ranges: Sequence[tuple[int, int, Address]]) -> None:
        self._ranges = sorted(ranges)
        self._starts = [r[0] for r in self._ranges]
        self.primaries: list[Address] = sorted({r[2] for r in self._ranges})

    @classmethod
    def parse(cls, reply: Any, asked: Address) -> SlotMap:
        ranges = []
        for row in reply:
            start, end, primary = int(row[0]), int(row[1]), row[2]
            host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
            # An empty or unknown host means "the node you asked" (Redis 7).
            ranges.append(
                (start, end, (host if host not in ("", "?") else asked[0], int(primary[1])))
            )
        if not ranges:
            raise SlotMoved(f"{asked[0]}:{asked[1]} serves no slots (is it a cluster node?)")
        return cls(ranges)

    def owner(self, slot: int) -> Address:
        i = bisect.bisect_right(self._starts, slot) - 1
        if i < 0 or not self._ranges[i][0] <= slot <= self._ranges[i][1]:
            raise SlotMoved(f"slot {slot} is not served by any primary")
        return self._ranges[i][2]


class ShardedConnections:
    """Makes ``ShardedConnection``s (the hub calls it on every (re)connect).

    Remembers the primaries it has seen, so a new slot map can be read even when
    every configured start node is down but the cluster lives on elsewhere.
    """

    def __init__(
        self,
        links: NodeLinks,
        seeds: Sequence[Address],
        *,
        ping_interval_s: float = 5.0,
        node_timeout_s: float = 1.0,
    ) -> None:
        self.links = links
        self.seeds = list(dict.fromkeys(seeds))
        self.ping_interval_s = ping_interval_s
        # How long one node may take to connect or to answer CLUSTER SLOTS: a frozen
        # node (SIGSTOP, a stalled VM) accepts TCP connections and answers nothing.
        self.node_timeout_s = node_timeout_s
        self.known: list[Address] = []

    @classmethod
    def from_settings(
        cls, settings: Settings, *, ping_interval_s: float, links: NodeLinks | None = None
    ) -> ShardedConnections:
        """On ``links``, the command client's (``GatedRedisCluster.links``), or on
        links of its own.  A node gets a third of the hub's connect budget
        (``HERALD_REDIS_SOCKET_TIMEOUT_S``): reading the slot map and connecting the
        primaries both fit in it."""
        url = parse_url(settings.redis_url)
        seeds = [(str(url.get("host", "127.0.0.1")), int(url.get("port", 6379)))]
        seeds += [node_address(n) for n in settings.redis_cluster_nodes]
        return cls(
            links or node_links(settings),
            seeds,
            ping_interval_s=ping_interval_s,
            node_timeout_s=settings.redis_socket_timeout_s / 3,
        )

    def __call__(self) -> ShardedConnection:
        return ShardedConnection(self)

    async def slot_map(self) -> SlotMap:
        """Ask the known primaries and the start nodes at once; the first answer wins.

        One at a time, a frozen node would take its whole deadline before the next
        was asked, on every reconnect, for as long as it stays frozen.  Raises
        ``TimeoutError`` when no node answered in time (the cluster is frozen: the
        hub ends its streams, as for one frozen server), else ``ConnectionError``."""
        asks = [
            asyncio.create_task(self._ask(addr), name=f"herald-slots-{addr[1]}")
            for addr in dict.fromkeys([*self.known, *self.seeds])
        ]
        errors: list[BaseException] = []
        try:
            for ask in asyncio.as_completed(asks):
                try:
                    slots = await ask
                except Exception as e:
                    errors.append(e)
                    continue
                self.known = slots.primaries
                return slots
        finally:
            for ask in asks:
                ask.cancel()
            await asyncio.gather(*asks, return_exceptions=True)
        detail = "; ".join(f"{type(e).__name__}: {e}" for e in errors)
        if all(isinstance(e, TimeoutError) for e in errors):
            raise TimeoutError(f"no cluster node answered CLUSTER SLOTS in time: {detail}")
        raise ConnectionError(f"no cluster node answered CLUSTER SLOTS: {detail}")

    async def _ask(self, addr: Address) -> SlotMap:
        link = self.links.detached(*addr)  # replicas too: no link of theirs is kept
        try:
            async with _node_deadline(addr, self.node_timeout_s, "CLUSTER SLOTS"):
                await link.ensure()
                reply = await link.call("CLUSTER", "SLOTS")
            return SlotMap.parse(reply, addr)
        finally:
            await link.aclose()

    async def connect_node(self, addr: Address) -> NodeLink:
        """The link to one primary, connected within ``node_timeout_s``.

        A primary of the slot map that does not answer raises ``ConnectionError``,
        not ``TimeoutError``: the others answered, so the cluster lives and will fail
        the node over; the hub reconnects (its streams wait) until it has."""
        link = self.links.get(*addr)
        try:
            async with _node_deadline(addr, self.node_timeout_s, "the connection"):
                await link.ensure()
        except TimeoutError as e:
            raise ConnectionError(str(e)) from e
        return link


@contextlib.asynccontextmanager
async def _node_deadline(addr: Address, seconds: float, what: str) -> AsyncIterator[None]:
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as e:
        raise TimeoutError(f"{addr[0]}:{addr[1]} did not answer {what} within {seconds:g} s") from e


class ShardedConnection:
    """Sharded pub/sub on the link to every primary, read as one (see module docs)."""

    def __init__(self, factory: ShardedConnections) -> None:
        self._factory = factory
        self._slots: SlotMap | None = None
        self._nodes: dict[Address, NodeLink] = {}
        # Channels subscribed on each primary, by slot: unsubscribed when this ends.
        self._channels: dict[Address, dict[int, set[str]]] = {}
        self._pingers: list[asyncio.Task[None]] = []
        self._inbox: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._failure: BaseException | None = None

    @property
    def primaries(self) -> list[Address]:
        return list(self._nodes)

    @property
    def is_connected(self) -> bool:
        return (
            self._slots is not None
            and self._failure is None
            and all(link.is_connected for link in self._nodes.values())
        )

    async def connect(self) -> None:
        self._slots = await self._factory.slot_map()
        primaries = self._slots.primaries
        results = await asyncio.gather(
            *(self._factory.connect_node(addr) for addr in primaries), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
        for addr, link in zip(primaries, results, strict=True):
            assert isinstance(link, NodeLink)
            self._nodes[addr] = link
            self._channels[addr] = {}
            link.pushes = self
        self._pingers = [
            asyncio.create_task(self._ping(link), name=f"herald-hub-{addr[1]}")
            for addr, link in self._nodes.items()
        ]

    async def send_command(self, *args: Any, **kwargs: Any) -> None:
        command, channels = str(args[0]).upper(), [str(c) for c in args[1:]]
        if command == "PING":
            for link in self._nodes.values():
                self._watch(link.call("PING"), pong=True)
            return
        if command not in ("SUBSCRIBE", "UNSUBSCRIBE"):
            raise ValueError(f"{command} is not sent on the sharded pub/sub connection")
        if self._slots is None or self._failure is not None:
            raise ConnectionError("not connected")
        # SSUBSCRIBE refuses channels of different slots in one call: one per slot.
        by_slot: dict[int, list[str]] = {}
        for ch in channels:
            by_slot.setdefault(slot_of(ch), []).append(ch)
        for slot, group in by_slot.items():
            try:
                addr = self._slots.owner(slot)
                owner = self._nodes.get(addr)
                if owner is None:
                    raise SlotMoved(f"slot {slot} is served by a primary not connected")
            except SlotMoved as e:
                self._fail(e)  # the hub reconnects with a fresh slot map
                raise
            held = self._channels[addr].setdefault(slot, set())
            if command == "SUBSCRIBE":
                held.update(group)
            else:
                held.difference_update(group)
            self._watch(owner.subscription("S" + command, group), pong=False)

    def _watch(self, future: asyncio.Future[Any], *, pong: bool) -> None:
        """An error reply to SSUBSCRIBE (``MOVED``, …: a stale slot map) or a
        failed PING ends the connection; a PING's answer is a sign of life."""

        def done(f: asyncio.Future[Any]) -> None:
            if f.cancelled():
                return
            error = f.exception()
            if error is not None:
                self._fail(SlotMoved(str(error)) if isinstance(error, ResponseError) else error)
            elif pong:
                self._put([b"pong", b""])

        future.add_done_callback(done)

    async def _ping(self, link: NodeLink) -> None:
        """Pinged per primary: traffic on one shard says nothing of another.  An
        answer owed too long fails the link (``NodeLink``), and so this."""
        while True:
            await asyncio.sleep(self._factory.ping_interval_s)
            if not link.owes_replies:
                self._watch(link.call("PING"), pong=False)

    # -- pushes (``PushSink``) ------------------------------------------------

    def on_push(self, reply: list[Any], requested: bool) -> None:
        kind = reply[0]
        if kind == b"smessage":
            self._put([b"message", reply[1], reply[2]])
        elif kind == b"ssubscribe":
            self._put([b"subscribe", reply[1], reply[2]])
        elif kind == b"sunsubscribe":
            if not requested:
                self._fail(SlotMoved(f"{reply[1].decode()}: its slot left this primary"))
            else:
                self._put([b"unsubscribe", reply[1], reply[2]])

    def on_link_failed(self, error: Exception) -> None:
        log.info("sharded pub/sub link failed: %s: %s", type(error).__name__, error)
        self._fail(error)

    # -- the hub's reads --------------------------------------------------------

    async def read_response(
        self,
        disable_decoding: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 - redis-py's signature
        *,
        disconnect_on_error: bool = True,
        push_request: bool | None = False,
    ) -> Any:
        """The next reply of any primary, oldest first; None after ``timeout``."""
        if not self._inbox:
            if self._failure is not None:
                raise self._failure
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                # Not wait_for: on 3.11 it swallows a cancel that races a result,
                # and the hub's reader would then never stop.
                async with asyncio.timeout(timeout):
                    await waiter
            except TimeoutError:
                return None
            finally:
                self._waiter = None
        item = self._inbox.popleft()
        if isinstance(item, BaseException):
            raise item
        return item

    def _put(self, item: Any) -> None:
        self._inbox.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, e: BaseException) -> None:
        """The first failure ends the connection: the hub's next read raises it."""
        if self._failure is None:
            self._failure = e
            self._put(e)

    async def disconnect(self, nowait: bool = False) -> None:
        pingers, self._pingers = self._pingers, []
        for task in pingers:
            task.cancel()
        # gather, not a suppress(CancelledError) per task: a cancel of the caller
        # itself must still go through.
        await asyncio.gather(*pingers, return_exceptions=True)
        for addr, link in self._nodes.items():
            groups = [sorted(chs) for chs in self._channels.get(addr, {}).values() if chs]
            link.detach(self, groups)
        self._nodes.clear()

"""One connection per Redis Cluster node for all of a process's commands.

redis-py's cluster client gives every node a pool: a command holds a connection
for its whole round trip, so N commands in flight to one node hold N connections
to it.  Redis answers the commands of one connection in the order they came, so
they need not wait for each other: a ``NodeLink`` writes each command as soon as
it is given and hands the replies back in order (pipelining across callers).
``LinkedConnection`` is the connection class the cluster client is given; each of
its "connections" is a view of its node's one link, so the pool may hold as many
as it likes while the process holds one socket per node.

A blocking command (``BLPOP``, ``XREADGROUP … BLOCK``, ``WAIT``, …) would hold up
every command behind it on the shared socket, so it goes over a plain connection
of its own: the workers' blocking client has its own, and a blocking command given
to the shared client (a task handler's ``BLPOP``) is sent on a connection that
its view opens for such commands only.

Failure is per link, as per socket before: a link that breaks, or leaves a reply
owed for longer than ``timeout_s`` (a frozen node), fails every command waiting on
it with ``ConnectionError`` or ``TimeoutError`` and is opened again on next use;
the cluster client then re-reads the slot map and retries as it always does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from collections.abc import Iterable
from typing import Any, ClassVar, Protocol, cast

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["LinkedConnection", "NodeLink", "NodeLinks"]

_READ_SIZE = 65536


class NodeLink:
    """One connection to one node; commands are written at once, replies matched in order."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout_s: float,
        protocol: int = 2,
        tls: bool = False,
        username: str | None = None,
        password: str | None = None,
        keepalive_options: dict[int, int] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.timeout_s = timeout_s
        self.protocol = protocol
        self.tls = tls  # ``rediss://``: TLS with the system's certificate authorities
        self._auth = [username or "default", password] if password else []
        self._keepalive = keepalive_options
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        # Replies owed, oldest first: (future, when the command went out, and for
        # SSUBSCRIBE/SUNSUBSCRIBE what was asked: see ``subscription``).
        self._pending: deque[tuple[asyncio.Future[Any], float, _Subscribing | None]] = deque()
        # Who gets the pushes (the hub's sharded pub/sub), and until when pushes
        # left from an earlier subscriber are dropped (``detach``).
        self.pushes: PushSink | None = None
        self._quiet: asyncio.Future[Any] | None = None
        self._opening = asyncio.Lock()
        self.opened = 0  # how many times a socket was opened (tests, metrics)

    @property
    def is_connected(self) -> bool:
        return self._writer is not None

    @property
    def owes_replies(self) -> bool:
        return bool(self._pending)

    def call(self, *args: str | bytes) -> asyncio.Future[Any]:
        """Send one command now; its reply's future."""
        (future,) = self.send([hiredis.pack_command(cast(tuple[str], args))], 1)
        return future

    def subscription(self, command: str, channels: list[str]) -> asyncio.Future[Any]:
        """``SSUBSCRIBE``/``SUNSUBSCRIBE`` (one slot's channels), followed by a PING.

        In RESP3 the confirmations come as pushes, which Redis may also send
        unasked (a slot that moved away), and a refusal (``MOVED``) as a reply.
        Counting pushes could take an unasked one for a confirmation and leave the
        refusal to the next caller; the PING's answer marks the end instead: the
        future is done at the PONG, with the error reply if one came before it."""
        writer = self._writer
        if writer is None:
            raise RedisConnectionError(f"not connected to {self.host}:{self.port}")
        asked = _Subscribing(command.lower().encode(), {c.encode() for c in channels})
        packed = [
            hiredis.pack_command(cast(tuple[str], (command, *channels))),
            hiredis.pack_command(("PING",)),
        ]
        (future,) = self._write(writer, packed, 1, asked)
        return future

    def detach(self, sink: PushSink, unsubscribe: list[list[str]]) -> None:
        """``sink`` stops getting pushes: unsubscribe its channels (one list per
        slot), and drop every push until the reply to a PING sent after them, so
        whoever attaches next sees none of ``sink``'s messages."""
        if self.pushes is not sink:
            return
        self.pushes = None
        if self._writer is None:
            return
        for group in unsubscribe:
            self.subscription("SUNSUBSCRIBE", group).add_done_callback(_retrieve)
        self._quiet = self.call("PING")
        self._quiet.add_done_callback(_retrieve)

    async def ensure(self) -> None:
        if self._writer is not None:
            return
        async with self._opening:
            if self._writer is None:
                await self._open()

    async def _open(self) -> None:
        writer: asyncio.StreamWriter | None = None
        task: asyncio.Task[None] | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, ssl=ssl.create_default_context() if self.tls else None
                )
                self._configure(writer)
                parser = hiredis.Reader(
                    protocolError=InvalidResponse, replyError=BaseParser.parse_error
                )
                task = asyncio.create_task(
                    self._read(reader, writer, parser), name=f"herald-link-{self.port}"
                )
                hello = self._handshake()
                if hello:
                    # Before anyone else may write: the handshake comes first.
                    (answer,) = self._write(writer, [hiredis.pack_command(hello)], 1)
                    await answer
        except BaseException as e:
            if task is not None:
                task.cancel()  # it closes the socket
            elif writer is not None:
                writer.close()
            if isinstance(e, TimeoutError):
                raise RedisTimeoutError(
                    f"{self.host}:{self.port} did not answer within {self.timeout_s:g} s"
                ) from e
            if isinstance(e, OSError):
                raise RedisConnectionError(
                    f"Error connecting to {self.host}:{self.port}: {e}"
                ) from e
            raise
        self._writer, self._reader_task = writer, task
        self.opened += 1

    def _handshake(self) -> tuple[str] | None:
        """HELLO for RESP3 (what the client's reply callbacks expect), with AUTH."""
        if self.protocol == 3:
            auth = ["AUTH", *self._auth] if self._auth else []
            return cast(tuple[str], ("HELLO", "3", *auth))
        return cast(tuple[str], ("AUTH", *self._auth)) if self._auth else None

    def _configure(self, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._keepalive:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                for option, value in self._keepalive.items():
                    sock.setsockopt(socket.IPPROTO_TCP, option, value)

    def send(self, packed: Iterable[bytes], replies: int) -> list[asyncio.Future[Any]]:
        """Write ``replies`` packed commands now; a future per reply, in order."""
        writer = self._writer
        if writer is None:
            raise RedisConnectionError(f"not connected to {self.host}:{self.port}")
        return self._write(writer, packed, replies)

    def _write(
        self,
        writer: asyncio.StreamWriter,
        packed: Iterable[bytes],
        replies: int,
        expect: _Subscribing | None = None,
    ) -> list[asyncio.Future[Any]]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        futures = [loop.create_future() for _ in range(replies)]
        # One synchronous step: no other command can come between these writes
        # and their places in the queue of owed replies.
        self._pending.extend((f, now, expect) for f in futures)
        writer.writelines(packed)
        return futures

    async def drain(self) -> None:
        writer = self._writer
        if writer is not None:
            await writer.drain()

    async def _read(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, parser: Any
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    async with asyncio.timeout(self.timeout_s):
                        data = await reader.read(_READ_SIZE)
                except TimeoutError:
                    if self._pending and loop.time() - self._pending[0][1] >= self.timeout_s:
                        raise RedisTimeoutError(
                            f"{self.host}:{self.port} owes a reply for over {self.timeout_s:g} s"
                        ) from None
                    continue
                if not data:
                    raise RedisConnectionError(f"{self.host}:{self.port} closed the connection")
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    if isinstance(reply, hiredis.PushNotification):
                        self._push(reply)
                        continue
                    if not self._pending:
                        raise InvalidResponse(
                            f"{self.host}:{self.port} sent a reply nobody asked for"
                        )
                    asked = self._pending[0][2]
                    if asked is not None and not asked.ended_by(reply):
                        continue  # the refusal before its PONG: kept for the future
                    future, _, _ = self._pending.popleft()
                    if asked is not None and asked.error is not None:
                        reply = asked.error
                    if future.done():  # its caller gave up waiting
                        continue
                    if isinstance(reply, BaseException):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        except asyncio.CancelledError:
            self._fail(RedisConnectionError(f"connection to {self.host}:{self.port} closed"))
            raise
        except Exception as e:
            error = (
                e
                if isinstance(e, RedisConnectionError | RedisTimeoutError)
                else (RedisConnectionError(f"{self.host}:{self.port}: {type(e).__name__}: {e}"))
            )
            self._fail(error)
        finally:
            writer.close()

    def _push(self, reply: list[Any]) -> None:
        asked = self._pending[0][2] if self._pending else None
        # A confirmation of the command owed first, or (rarely) Redis dropping one
        # of the channels we are dropping anyway.
        requested = asked is not None and reply[0] == asked.kind and reply[1] in asked.channels
        if self._quiet is not None:
            if not self._quiet.done():
                return  # left from the subscriber before
            self._quiet = None
        sink = self.pushes
        if sink is not None:
            sink.on_push(reply, requested)

    def _fail(self, error: Exception) -> None:
        """Every owed reply fails with ``error``; the next command opens a new socket."""
        self._writer = None
        self._quiet = None
        pending, self._pending = self._pending, deque()
        for future, _, _ in pending:
            if not future.done():
                future.set_exception(error)
        sink, self.pushes = self.pushes, None
        if sink is not None:
            sink.on_link_failed(error)

    async def aclose(self) -> None:
        task, self._reader_task = self._reader_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._writer = None


class _Subscribing:
    """What an owed SSUBSCRIBE/SUNSUBSCRIBE asked, and the refusal if one came."""

    __slots__ = ("channels", "error", "kind")

    def __init__(self, command: bytes, channels: set[bytes]) -> None:
        self.kind = command  # the push kind of its confirmations
        self.channels = channels
        self.error: BaseException | None = None

    def ended_by(self, reply: Any) -> bool:
        """The command's own reply is only ever an error; its PING's ends it."""
        if isinstance(reply, BaseException):
            self.error = reply
            return False
        return True


class PushSink(Protocol):
    """Who reads a link's pushes: told of each, and of the link failing."""

    def on_push(self, reply: list[Any], requested: bool) -> None: ...

    def on_link_failed(self, error: Exception) -> None: ...


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # the link's failure is reported to its sink


class NodeLinks:
    """The links of one cluster client, one per node address."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.links: dict[tuple[str, int], NodeLink] = {}

    def get(self, host: str, port: int) -> NodeLink:
        link = self.links.get((host, port))
        if link is None:
            link = self.links[(host, port)] = NodeLink(host, port, **self.options)
        return link

    def detached(self, host: str, port: int) -> NodeLink:
        """A link to one node that is not kept (asking a node for the slot map)."""
        return NodeLink(host, port, **self.options)

    @property
    def protocol(self) -> int:
        return int(self.options.get("protocol", 2))

    async def keep_only(self, nodes: set[tuple[str, int]]) -> None:
        """Close the idle links to any other node (one still owed replies, or that
        the hub reads, stays: the hub finds out itself, from Redis)."""
        idle = [
            link
            for addr, link in self.links.items()
            if addr not in nodes and not link.owes_replies and link.pushes is None
        ]
        for link in idle:
            del self.links[(link.host, link.port)]
        await asyncio.gather(*(link.aclose() for link in idle), return_exceptions=True)

    async def aclose(self) -> None:
        links = list(self.links.values())
        self.links.clear()
        await asyncio.gather(*(link.aclose() for link in links), return_exceptions=True)


class LinkedConnection(Connection):
    """The cluster client's connection class: a view of its node's ``NodeLink``.

    redis-py packs a command (or a pipeline's commands), sends it, then reads one
    reply per command; that is all the cluster client does with a connection.  A
    subclass per client sets ``node_links`` (``linked_connection_class``)."""

    node_links: ClassVar[NodeLinks]
    # A read with no timeout of its own waits this long.  Less than the whole call's
    # deadline: a node that froze must come back to redis-py as a ``TimeoutError``
    # in time for it to re-read the slot map and retry on the node that took over.
    read_timeout_s: ClassVar[float | None] = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._kwargs = kwargs
        if self.protocol != self.node_links.protocol:
            raise ValueError("the client and its node links must speak one protocol")
        self._packed = 0
        self._replies: deque[asyncio.Future[Any]] = deque()
        self._blocking = False  # the command being packed blocks the connection
        self._own: Connection | None = None  # for blocking commands only
        self._on_own = False  # the replies owed are on ``_own``

    @property
    def _link(self) -> NodeLink:
        # Looked up on each use, not kept: a link that was closed and dropped is
        # replaced, and every view of the node must find the replacement.
        return self.node_links.get(self.host, self.port)

    @property
    def is_connected(self) -> bool:
        return self._link.is_connected

    async def connect(self) -> None:
        await self._link.ensure()

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        await self._link.ensure()

    async def disconnect(
        self,
        nowait: bool = False,
        error: Exception | None = None,
        failure_count: int | None = None,
        health_check_failed: bool = False,
    ) -> None:
        # The socket is the node's, not this view's: forget the replies owed to it
        # (the link drops them when they come) and leave the socket to the link.
        self._replies.clear()
        self.reset_should_reconnect()  # type: ignore[no-untyped-call]  # set on a new map
        if self._own is not None:
            await self._own.disconnect(nowait, error, failure_count, health_check_failed)

    def pack_command(self, *args: Any) -> list[bytes]:
        self._packed = 1
        self._blocking = blocks(args)
        return super().pack_command(*args)

    def pack_commands(self, commands: Iterable[Iterable[Any]]) -> list[bytes]:
        commands = list(commands)
        packed = super().pack_commands(commands)  # calls pack_command for each
        self._packed = len(commands)
        self._blocking = any(blocks(tuple(c)) for c in commands)
        return packed

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        replies, self._packed = self._packed, 0
        if replies <= 0:
            raise ValueError("LinkedConnection sends only what its pack_command(s) packed")
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        self._on_own = self._blocking
        if self._on_own:
            if self._own is None:
                self._own = Connection(**self._kwargs)
            await self._own.send_packed_command(command, check_health)
            return
        await self._link.ensure()
        self._replies.clear()  # a previous user that gave up may have left some
        self._replies.extend(self._link.send(command, replies))
        await self._link.drain()

    async def read_response(
        self,
        disable_decoding: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 - redis-py's signature
        *,
        disconnect_on_error: bool = True,
        push_request: bool | None = False,
    ) -> Any:
        if self._on_own and self._own is not None:
            return await self._own.read_response(
                disable_decoding,
                timeout,
                disconnect_on_error=disconnect_on_error,
                push_request=push_request,
            )
        if not self._replies:
            raise RedisConnectionError("no reply is owed on this connection")
        future = self._replies.popleft()
        if timeout is None:
            timeout = self.read_timeout_s
        if timeout is None:
            return await future
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError as e:
            raise RedisTimeoutError("Timeout reading from node") from e


_BLOCKING = frozenset(
    b"BLPOP BRPOP BRPOPLPUSH BLMOVE BLMPOP BZPOPMIN BZPOPMAX BZMPOP WAIT WAITAOF".split()
)


def blocks(args: tuple[Any, ...]) -> bool:
    """Does this command make Redis hold its connection until something happens?"""
    if not args:
        return False
    name = args[0] if isinstance(args[0], bytes) else str(args[0]).encode()
    name = name.split(b" ", 1)[0].upper()
    if name in _BLOCKING:
        return True
    if name in (b"XREAD", b"XREADGROUP"):
        return any(
            (a if isinstance(a, bytes) else str(a).encode()).upper() == b"BLOCK" for a in args[1:]
        )
    return False


def linked_connection_class(
    links: NodeLinks, read_timeout_s: float | None = None
) -> type[LinkedConnection]:
    attrs = {"node_links": links, "read_timeout_s": read_timeout_s}
    return type("LinkedConnection", (LinkedConnection,), attrs)

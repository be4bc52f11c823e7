"""``NodeLink`` keeps replies in step with the commands that asked, when Redis
mixes pushes, refusals and replies on one connection (a scripted server on
loopback plays what a cluster node sends while a slot moves away)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.exceptions import ResponseError

from herald.journal.runtime.multiplex import NodeLink

# What the node answers to the SUNSUBSCRIBE + PING, then the GET: the slot of "x"
# left this node, so Redis first drops "x" unasked (a push), then refuses our
# SUNSUBSCRIBE (MOVED), answers the PING, then the GET.
SCRIPT = (
    b">3\r\n$12\r\nsunsubscribe\r\n$1\r\nx\r\n:0\r\n"
    b"-MOVED 16287 127.0.0.1:7002\r\n"
    b"+PONG\r\n"
    b"$5\r\nvalue\r\n"
)


class Sink:
    def __init__(self) -> None:
        self.pushes: list[tuple[Any, bool]] = []

    def on_push(self, reply: list[Any], requested: bool) -> None:
        self.pushes.append((list(reply), requested))

    def on_link_failed(self, error: Exception) -> None:
        raise AssertionError(f"the link failed: {error}")


@pytest.fixture
async def node() -> AsyncIterator[tuple[str, int]]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"GET\r\n")  # everything was sent: answer it all at once
        writer.write(SCRIPT)
        await writer.drain()
        await reader.read()  # until the link closes
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield "127.0.0.1", server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_a_refused_unsubscribe_after_an_unasked_one_leaves_the_next_reply_in_place(
    node: tuple[str, int],
) -> None:
    link = NodeLink(*node, timeout_s=5, protocol=2)
    sink = Sink()
    try:
        await link.ensure()
        link.pushes = sink
        unsubscribed = link.subscription("SUNSUBSCRIBE", ["x"])
        get = link.call("GET", "k")
        with pytest.raises(ResponseError, match="16287"):  # MovedError
            await unsubscribed
        assert await get == b"value"  # not b"PONG": the GET's own reply
        assert sink.pushes == [([b"sunsubscribe", b"x", 0], True)]
    finally:
        await link.aclose()

"""``EventStreamResponse`` as the fast path's writer: writes without a task when the
server's ``send`` completes at once, in order when it has to wait, and the stream
ends when the client goes away (watched without a task)."""

from __future__ import annotations

import asyncio
from typing import Any

from herald.api.sse import Closer, EventStreamResponse
from herald.streams.hub import CLOSE, Subscription


class Server:
    """An ASGI server whose body sends wait while ``paused`` is set (as uvicorn's do
    while the transport is paused), and whose receive() ends on ``disconnect``."""

    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.writable = asyncio.Event()
        self.writable.set()
        self.gone = asyncio.Event()
        self.sent_first = False

    async def send(self, message: dict[str, Any]) -> None:
        if not self.writable.is_set():
            await self.writable.wait()
        if message["type"] == "http.response.body":
            self.body.append(message["body"])

    async def receive(self) -> dict[str, Any]:
        if not self.sent_first:
            self.sent_first = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}


async def _run(produce) -> tuple[Server, asyncio.Task[None], EventStreamResponse]:
    server = Server()
    response = EventStreamResponse(produce, (), headers={}, send_timeout_s=5)
    task = asyncio.create_task(response({"type": "http"}, server.receive, server.send))
    return server, task, response


async def test_write_now_completes_without_a_task_switch_and_keeps_order_when_paused():
    started = asyncio.Event()
    release = asyncio.Event()

    async def produce(closer: Closer, emit) -> None:
        writer = emit.__self__
        assert writer.ready()
        writer.write_now(b"a")  # the send completed inside the call
        assert server.body == [b"a"] and writer.ready()
        server.writable.clear()
        writer.write_now(b"b")  # paused: finishes in the background
        assert not writer.ready()
        started.set()
        await release.wait()
        await emit(b"c")  # waits for "b" first

    server, task, _ = await _run(produce)
    async with asyncio.timeout(2):
        await started.wait()
        assert server.body == [b"a"]
        release.set()
        server.writable.set()
        await task
    assert server.body == [b"a", b"b", b"c", b""]


async def test_a_disconnect_ends_the_stream_through_the_closer():
    taken: list[object] = []

    async def produce(closer: Closer, emit) -> None:
        sub = Subscription(("c",), 10)
        closer.attach(sub)
        taken.extend(await sub.take())  # CLOSE, once the client is gone

    server, task, response = await _run(produce)
    server.gone.set()
    async with asyncio.timeout(2):
        await task
    assert taken == [CLOSE] and not response.ready()

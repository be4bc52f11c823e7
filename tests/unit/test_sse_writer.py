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


class _Done:
    """An awaitable that is already complete and is not a coroutine (no ``send``)."""

    def __await__(self):
        return iter(())


class _Wrapped:
    """An awaitable that is not a coroutine, around one."""

    def __init__(self, coro) -> None:
        self._coro = coro

    def __await__(self):
        return self._coro.__await__()


class AwaitableServer(Server):
    """A server whose ``send`` and ``receive`` return awaitables that are not
    coroutines, as some ASGI servers written in other languages do (e.g. granian)."""

    def send(self, message: dict[str, Any]):  # type: ignore[override]
        if message["type"] == "http.response.body":
            self.body.append(message["body"])
        return _Done()

    def receive(self):  # type: ignore[override]
        return _Wrapped(super().receive())


async def test_write_now_works_with_a_server_whose_send_is_not_a_coroutine():
    async def produce(closer: Closer, emit) -> None:
        writer = emit.__self__
        writer.write_now(b"a")
        assert writer.ready()
        await emit(b"b")

    server = AwaitableServer()
    response = EventStreamResponse(produce, (), headers={}, send_timeout_s=5)
    async with asyncio.timeout(2):
        await response({"type": "http"}, server.receive, server.send)
    assert server.body == [b"a", b"b", b""]


async def test_a_disconnect_is_seen_with_a_server_whose_receive_is_not_a_coroutine():
    taken: list[object] = []

    async def produce(closer: Closer, emit) -> None:
        sub = Subscription(("c",), 10)
        closer.attach(sub)
        await emit(b"a")
        taken.extend(await sub.take())  # CLOSE, once the client is gone

    server = AwaitableServer()
    response = EventStreamResponse(produce, (), headers={}, send_timeout_s=5)
    task = asyncio.create_task(response({"type": "http"}, server.receive, server.send))
    async with asyncio.timeout(2):
        while not server.body:  # noqa: ASYNC110 - polled, with a deadline
            await asyncio.sleep(0)
        server.gone.set()
        await task
    assert taken == [CLOSE] and server.body == [b"a"]


class ChunkedBodyServer(Server):
    """A server that hands a GET's empty body over in two messages (``more_body``,
    as httpx's in-process transport does): the second is not a disconnect."""

    def __init__(self) -> None:
        super().__init__()
        self.body_messages = [
            {"type": "http.request", "body": b"", "more_body": True},
            {"type": "http.request", "body": b"", "more_body": False},
        ]

    async def receive(self) -> dict[str, Any]:
        if self.body_messages:
            return self.body_messages.pop(0)
        await self.gone.wait()
        return {"type": "http.disconnect"}


async def test_a_body_in_several_messages_is_not_taken_for_a_disconnect():
    async def produce(closer: Closer, emit) -> None:
        await emit(b"a")

    server = ChunkedBodyServer()
    response = EventStreamResponse(produce, (), headers={}, send_timeout_s=5)
    async with asyncio.timeout(2):
        await response({"type": "http"}, server.receive, server.send)
    # The stream ran, and ended its response (the empty last chunk).
    assert server.body == [b"a", b""]

"""Herald's HTTP/1.1 protocol (``herald.api.httpserver``) under a real uvicorn server
on loopback, with a small ASGI app: the HTTP it must speak (pipelining, request
bodies, ``Expect: 100-continue``, HEAD, a malformed request, streaming and the
client's disconnect) and the per-connection state it promises not to keep."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn

from herald.api.httpserver import Exchange, HttpProtocol, guarded_protocol

DEADLINE_S = 10.0


class App:
    """``/echo`` answers the request body; ``/stream`` and ``/hook`` send one chunk
    and then wait for the client to go away (recorded in ``gone``), through
    ``receive()`` and through ``Exchange.when_gone``; anything else, its path."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()
        self.streaming = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        if path == "/echo":
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            await self._answer(send, body)
        elif path in ("/stream", "/hook"):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first", "more_body": True})
            assert (await receive())["type"] == "http.request"
            if path == "/hook":
                receive.__self__.when_gone(self.gone.set)
                self.streaming.set()
                await self.gone.wait()
            else:
                self.streaming.set()
                assert (await receive())["type"] == "http.disconnect"
                self.gone.set()
        else:
            await self._answer(send, path.encode())

    @staticmethod
    async def _answer(send: Any, body: bytes) -> None:
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def served() -> AsyncIterator[tuple[uvicorn.Server, App, int]]:
    app = App()
    config = uvicorn.Config(app, http=HttpProtocol, lifespan="off", log_config=None)
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await server.startup(sockets=[sock])
    try:
        yield server, app, sock.getsockname()[1]
    finally:
        server.force_exit = True
        await server.shutdown(sockets=[sock])


async def _talk(port: int, raw: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    return reader, writer


async def _response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    async with asyncio.timeout(DEADLINE_S):
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return head, await reader.readexactly(length)


async def test_pipelined_requests_are_answered_in_order(served) -> None:
    _, _, port = served
    reader, writer = await _talk(
        port, b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert (await _response(reader))[1] == b"/one"
    assert (await _response(reader))[1] == b"/two"
    writer.close()


async def test_a_body_sent_in_pieces_after_100_continue_reaches_the_app(served) -> None:
    _, _, port = served
    reader, writer = await _talk(
        port,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
    )
    async with asyncio.timeout(DEADLINE_S):
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"5\r\nhello\r\n")
    await writer.drain()
    writer.write(b"6\r\n world\r\n0\r\n\r\n")
    head, body = await _response(reader)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert body == b"hello world"
    writer.close()


async def test_head_gets_headers_and_no_body(served) -> None:
    _, _, port = served
    reader, writer = await _talk(
        port, b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    async with asyncio.timeout(DEADLINE_S):
        head = await reader.readuntil(b"\r\n\r\n")
    assert b"content-length: 2\r\n" in head
    # No body followed: the next bytes are the next response.
    assert (await _response(reader))[1] == b"/after"
    writer.close()


async def test_a_malformed_request_gets_400_and_the_connection_closes(served) -> None:
    _, _, port = served
    reader, writer = await _talk(port, b"GET /x HTTP/1.1\r\nHost x\r\n\r\n")
    async with asyncio.timeout(DEADLINE_S):
        answer = await reader.read()  # until the server closes
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"connection: close\r\n" in answer
    writer.close()


async def _streaming(port: int, app: App, path: str) -> tuple[bytes, bytes, asyncio.StreamWriter]:
    """Open ``path`` and wait until its first chunk is read and the app streams on:
    the response head, that chunk as framed, and the client's writer."""
    reader, writer = await _talk(port, b"GET %b HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
    async with asyncio.timeout(DEADLINE_S):
        head = await reader.readuntil(b"\r\n\r\n")
        chunk = await reader.readuntil(b"first\r\n")
        await app.streaming.wait()
    return head, chunk, writer


async def test_a_streaming_response_is_chunked_and_sees_the_client_leave(served) -> None:
    server, app, port = served
    head, chunk, writer = await _streaming(port, app, "/stream")
    assert b"transfer-encoding: chunked\r\n" in head
    assert chunk == b"5\r\nfirst\r\n"
    (conn,) = server.server_state.connections
    # While the response streams, the request is all read: no parser is kept.
    assert conn.parser is None
    writer.close()
    async with asyncio.timeout(DEADLINE_S):
        await app.gone.wait()


async def test_an_idle_stream_learns_of_the_disconnect_without_a_pending_receive(served) -> None:
    server, app, port = served
    _, _, writer = await _streaming(port, app, "/hook")
    (conn,) = server.server_state.connections
    assert conn.exchange.receivers is None  # nothing waits in receive()
    assert not app.gone.is_set()
    writer.close()
    async with asyncio.timeout(DEADLINE_S):
        await app.gone.wait()


async def test_a_keep_alive_connection_serves_the_next_request_with_a_new_parser(served) -> None:
    server, _, port = served
    reader, writer = await _talk(port, b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await _response(reader))[1] == b"/one"
    (conn,) = server.server_state.connections
    assert conn.parser is None
    writer.write(b"GET /t")  # a head in two reads: the parser lives until it is whole
    await writer.drain()
    writer.write(b"wo HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await _response(reader))[1] == b"/two"
    writer.close()


def test_connections_and_exchanges_keep_no_instance_dict() -> None:
    limits = SimpleNamespace(
        http_connection_cap=10, http_max_header_bytes=4096, http_header_timeout_s=1.0
    )
    for cls in (HttpProtocol, guarded_protocol(limits), Exchange):  # type: ignore[arg-type]
        assert not hasattr(cls.__new__(cls), "__dict__"), cls

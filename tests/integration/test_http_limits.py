"""The HTTP layer bounds what a client can hold (issue 11, #3): the size of a request's
head, the time to send it, idle keep-alive connections, and open connections per
process.  Raw sockets against a real ``herald serve``, all on loopback."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import pytest

from tests.servers import HeraldProcess

pytestmark = pytest.mark.integration

HEADER_TIMEOUT_S = 2.0
KEEPALIVE_S = 1.0
MAX_HEADER_BYTES = 8192
SSE_CAP = 4
HTTP_CAP = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeraldProcess]:
    env = {
        "HERALD_HTTP_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "HERALD_HTTP_KEEPALIVE_S": str(KEEPALIVE_S),
        "HERALD_HTTP_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
        "HERALD_MAX_CONNECTIONS": str(SSE_CAP),
        "HERALD_HTTP_MAX_CONNECTIONS": str(HTTP_CAP),
    }
    with HeraldProcess(tmp_path_factory.mktemp("limits"), **env) as h:
        yield h


def _connect(server: HeraldProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _closed_within(sock: socket.socket, seconds: float) -> tuple[float, bytes]:
    """Read until the server closes; returns when (after now) and what it sent."""
    began = time.monotonic()
    received = b""
    sock.settimeout(seconds)
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {seconds:g} s: {received[:80]!r}")
    except ConnectionResetError:
        pass
    return time.monotonic() - began, received


def _response(sock: socket.socket) -> bytes:
    """One whole response (a Content-Length body), leaving the connection open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_a_head_over_the_limit_is_refused_before_it_is_all_read(server: HeraldProcess):
    sent = 0
    answer = b""
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: herald\r\nX-Big: ")
        chunk = b"a" * 65536
        try:
            while sent < 16 * 1024 * 1024:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    answer = sock.recv(65536)
                    break
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        print(f"header bytes sent before the server refused: {sent}")
        assert sent < 16 * 1024 * 1024, "the server accepted 16 MiB of headers"
        if answer:
            assert answer.startswith(b"HTTP/1.1 431"), answer[:80]
            assert b"headers_too_large" in answer


def test_a_head_just_under_the_limit_is_served(server: HeraldProcess):
    pad = b"a" * (MAX_HEADER_BYTES - 200)
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: herald\r\nX-Pad: " + pad + b"\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("partial", [b"", b"GET /healthz HTTP/1.1\r\nHost: her"])
def test_silent_and_slow_heads_are_closed_after_the_header_timeout(
    server: HeraldProcess, partial: bytes
):
    with _connect(server) as sock:
        sock.sendall(partial)
        took, received = _closed_within(sock, HEADER_TIMEOUT_S + 5)
    print(f"closed after {took:.2f} s: {received[:40]!r}")
    assert took >= HEADER_TIMEOUT_S - 0.5
    assert received.startswith(b"HTTP/1.1 408") and b"header_timeout" in received


def test_an_idle_keep_alive_connection_is_closed(server: HeraldProcess):
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n")
        assert _response(sock).startswith(b"HTTP/1.1 200")
        took, received = _closed_within(sock, KEEPALIVE_S + 5)
    print(f"idle keep-alive closed after {took:.2f} s")
    assert received == b"" and took < KEEPALIVE_S + 1


def test_connections_beyond_the_process_cap_get_503_and_are_closed(server: HeraldProcess):
    held = [_connect(server) for _ in range(HTTP_CAP)]
    try:
        # One request through each proves the server has accepted them all.
        for sock in held:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n")
            assert _response(sock).startswith(b"HTTP/1.1 200")
        with _connect(server) as extra:
            _, received = _closed_within(extra, 5)
        assert received.startswith(b"HTTP/1.1 503") and b"server_busy" in received
    finally:
        for sock in held:
            sock.close()
    # Once they are gone, new connections are served again.
    deadline = time.monotonic() + 10
    while True:
        with _connect(server) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n")
            if sock.recv(65536).startswith(b"HTTP/1.1 200"):
                break
        assert time.monotonic() < deadline


def test_the_http_cap_must_exceed_the_sse_cap():
    from herald.journal.runtime.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="HERALD_HTTP_MAX_CONNECTIONS must exceed"):
        Settings.load(max_connections=10, http_max_connections=10)
    assert Settings.load(max_connections=10).http_connection_cap == 266

"""``herald serve --workers N``: N API processes on one port, each with its own hub."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from tests.servers import HeraldProcess
from tests.sseclient import open_sse

pytestmark = pytest.mark.integration

STREAMS = 16  # over 2 processes: all on one by chance with probability 2 / 2**16


def _children(server: HeraldProcess) -> list[psutil.Process]:
    assert server.proc is not None
    return psutil.Process(server.proc.pid).children()


def _holding(proc: psutil.Process, port: int) -> int:
    """Established connections ``proc`` accepted on ``port``."""
    return sum(
        1
        for c in proc.net_connections(kind="tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


async def test_two_processes_share_the_port_and_every_stream_gets_every_event(
    tmp_path: Path, unique: str
):
    topics = orjson.dumps({unique: ["*"]}).decode()
    server = HeraldProcess(tmp_path, serve_args=("--workers", "2"), HERALD_TOPICS=topics)
    with server:
        children = _children(server)
        assert len(children) == 2
        tokens = [server.token(f"{unique}-{i}") for i in range(STREAMS // 8)]  # 8 per user
        admin = server.token(f"{unique}-admin", "admin")
        async with contextlib.AsyncExitStack() as stack:
            client = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
            streams = [
                await stack.enter_async_context(
                    open_sse(
                        client,
                        f"{server.url}/api/events",
                        tokens[i % len(tokens)],
                        params={"topic": unique},
                    )
                )
                for i in range(STREAMS)
            ]
            # The kernel spread the streams over both processes.
            assert all(_holding(p, server.port) > 0 for p in children)
            published = await client.post(
                f"{server.url}/api/publish",
                headers={"Authorization": f"Bearer {admin}"},
                json={"topic": unique, "type": "demo.hello", "data": {"n": 1}},
            )
            assert published.status_code == 201, published.text
            event_id = published.json()["id"]
            async with asyncio.timeout(10):
                got = [(await s.next_event()).json() for s in streams]
        assert [e["id"] for e in got] == [event_id] * STREAMS
        assert server.stop() < 30
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children)

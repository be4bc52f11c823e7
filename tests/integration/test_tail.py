"""``herald tail`` against a real server: prints events, reconnects from its last id
across a server restart, and reports gaps."""

from __future__ import annotations

import asyncio
import contextlib
import io
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from herald.api.tail import Tail
from herald.journal.base import JournalLimits, PublishRequest
from herald.journal.positions import Target
from herald.journal.redis import RedisJournal
from tests.conftest import REDIS_URL
from tests.servers import HeraldProcess

pytestmark = pytest.mark.integration


class Lines(io.StringIO):
    """Captured stdout that wakes waiters on every write."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def write(self, text: str) -> int:
        self.changed.set()
        return super().write(text)


async def test_tail_survives_a_restart_and_reports_gaps(tmp_path: Path, unique: str):
    journal = RedisJournal(aioredis.Redis.from_url(REDIS_URL), JournalLimits(stream_maxlen=20))
    user = Target.user(unique)
    with HeraldProcess(tmp_path, HERALD_RETRY_MS="100") as server:
        out, err = Lines(), io.StringIO()
        tail = Tail(
            f"{server.url}/api/events", server.token(unique), [], out=out, err=err, max_events=13
        )
        running = asyncio.create_task(tail.run())

        async def printed(n: int) -> None:
            async with asyncio.timeout(20):
                while tail.printed < n:
                    out.changed.clear()
                    await out.changed.wait()

        # Connected once a live event comes through: probe until one does.
        async with asyncio.timeout(20):
            while tail.printed == 0:
                await journal.publish(user, "demo.seq", {"n": 0})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(out.changed.wait(), 0.2)
        base = tail.printed
        await journal.publish_many([PublishRequest(user, "demo.seq", {"n": i}) for i in (1, 2)])
        await printed(base + 2)
        server.stop()  # tail now retries
        # While it is down the stream is trimmed past the tail's cursor.
        await journal.publish_many(
            [PublishRequest(user, "demo.seq", {"n": i}) for i in range(3, 203)]
        )
        server.start()
        assert await asyncio.wait_for(running, 30) == 0

    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    gap = [e for e in lines if e["type"] == "herald.gap"]
    assert len(gap) == 1 and gap[0]["data"]["reason"] == "trimmed"
    after_gap = [e["data"]["n"] for e in lines[lines.index(gap[0]) + 1 :]]
    assert after_gap == sorted(after_gap) and after_gap[-1] <= 202
    assert "reconnecting" in err.getvalue() and "GAP in user:" in err.getvalue()
    await journal.aclose()

"""One contract, every journal implementation: memory, fakeredis (Lua) and real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import fakeredis
import orjson
import pytest
import redis.asyncio as aioredis

from herald.journal.base import Journal, JournalLimits, PublishRequest
from herald.journal.envelope import EnvelopeTooLarge, InvalidEnvelope
from herald.journal.memory import MemoryJournal
from herald.journal.positions import ZERO_ID, StreamId, Target
from herald.journal.redis import RedisJournal
from tests.conftest import REDIS_URL

LIMITS = JournalLimits(max_envelope_bytes=2048, stream_maxlen=10000, idempotency_window_s=60)


@pytest.fixture(
    params=[
        "memory",
        "fakeredis",
        pytest.param("redis", marks=pytest.mark.integration),
    ]
)
async def journal(request: pytest.FixtureRequest) -> AsyncIterator[Journal]:
    if request.param == "memory":
        yield MemoryJournal(LIMITS)
        return
    client: aioredis.Redis
    if request.param == "fakeredis":
        client = fakeredis.FakeAsyncRedis(max_connections=1000)
    else:
        client = aioredis.Redis.from_pool(
            aioredis.BlockingConnectionPool.from_url(REDIS_URL, max_connections=16)
        )
    j = RedisJournal(client, LIMITS)
    yield j
    await j.aclose()


async def test_publish_assigns_increasing_ids_and_chains_previous(journal: Journal, unique: str):
    t = Target.user(unique)
    a = await journal.publish(t, "demo.created", {"n": 1})
    b = await journal.publish(t, "demo.created", {"n": 2})
    assert a.previous is None and not a.duplicate
    assert b.id > a.id and b.previous == a.id
    assert a.epoch == b.epoch


async def test_entries_are_valid_cloudevents_with_their_own_id(journal: Journal, unique: str):
    t = Target.topic(unique)
    r = await journal.publish(t, "printer.status", {"online": True}, source="/workers/probe")
    page = await journal.read_after(t, ZERO_ID, limit=10)
    (entry,) = page.entries
    assert page.epoch == r.epoch
    env = orjson.loads(entry.envelope)
    assert env["specversion"] == "1.0"
    assert env["id"] == str(r.id) == str(entry.id)
    # The source names the stream (after the publisher's own), so source + id is unique.
    assert env["type"] == "printer.status"
    assert env["source"] == f"/workers/probe/topics/{unique}"
    assert env["subject"] == f"topic:{unique}"
    assert env["datacontenttype"] == "application/json"
    assert env["data"] == {"online": True}
    assert env["time"].endswith("Z") and len(env["time"]) == 24


async def test_read_after_pages_in_order(journal: Journal, unique: str):
    t = Target.user(unique)
    reqs = [PublishRequest(t, "demo.n", {"n": i}) for i in range(25)]
    results = await journal.publish_many(reqs)
    seen, cursor = [], ZERO_ID
    while page := (await journal.read_after(t, cursor, limit=10)).entries:
        seen += [orjson.loads(e.envelope)["data"]["n"] for e in page]
        cursor = page[-1].id
    assert seen == list(range(25))
    assert [r.id for r in results] == sorted(r.id for r in results)


async def test_publish_many_keeps_order_per_stream_across_targets(journal: Journal, unique: str):
    a, b = Target.user(unique), Target.topic(unique)
    reqs = [PublishRequest(a if i % 2 else b, "demo.n", {"n": i}) for i in range(600)]
    results = await journal.publish_many(reqs)
    assert [r.target for r in results] == [r.target for r in reqs]
    for t in (a, b):
        ids = [r.id for r in results if r.target == t]
        assert ids == sorted(ids) and len(set(ids)) == 300
        assert [r.previous for r in results if r.target == t][1:] == ids[:-1]


async def test_idempotency_key_returns_first_id_and_writes_once(journal: Journal, unique: str):
    t = Target.user(unique)
    first = await journal.publish(t, "demo.once", {"x": 1}, idempotency_key="k1")
    again = await journal.publish(t, "demo.once", {"x": 1}, idempotency_key="k1")
    assert again.duplicate and again.id == first.id
    assert (await journal.info(t)).length == 1


async def test_invalid_envelopes_raise_before_writing(journal: Journal, unique: str):
    t = Target.user(unique)
    with pytest.raises(InvalidEnvelope):
        await journal.publish(t, "NoDots", {})
    with pytest.raises(InvalidEnvelope):
        await journal.publish(t, "demo.bad", ["not", "an", "object"])  # type: ignore[arg-type]
    with pytest.raises(EnvelopeTooLarge):
        await journal.publish(t, "demo.big", {"blob": "x" * 4096})
    with pytest.raises(InvalidEnvelope):
        await journal.publish_many(
            [PublishRequest(t, "demo.ok", {}), PublishRequest(t, "demo.bad", {"x": {1, 2}})]
        )
    assert (await journal.info(t)).length == 0


async def test_latest_walks_back_to_matching_type(journal: Journal, unique: str):
    t = Target.user(unique)
    want = await journal.publish(t, "mcp.oauth.completed", {"ok": True})
    await journal.publish_many(
        [PublishRequest(t, "source.ingest.progress", {}) for _ in range(450)]
    )
    found = await journal.latest(t, "mcp.oauth.")
    assert found is not None and found.id == want.id
    assert await journal.latest(t, "mcp.oauth.", max_scan=100) is None
    assert await journal.latest(Target.user(unique + "x"), "mcp.") is None


async def test_info_reports_epoch_first_last_and_length(journal: Journal, unique: str):
    t = Target.topic(unique)
    assert (await journal.info(t)).epoch is None
    a = await journal.publish(t, "demo.n", {})
    b = await journal.publish(t, "demo.n", {})
    info = await journal.info(t)
    assert (info.first, info.last, info.length, info.epoch) == (a.id, b.id, 2, a.epoch)


async def test_concurrent_publishers_never_share_an_id(journal: Journal, unique: str):
    t = Target.user(unique)
    results = await asyncio.gather(*(journal.publish(t, "demo.n", {"i": i}) for i in range(200)))
    ids = sorted(r.id for r in results)
    assert len(set(ids)) == 200
    chain = {r.previous: r.id for r in results}
    # Following previous pointers from the start visits every entry exactly once.
    walk, cur = [], None
    while cur in chain:
        cur = chain[cur]
        walk.append(cur)
    assert walk == ids


def test_stream_id_orders_numerically():
    assert StreamId.parse("10-0") > StreamId.parse("9-5")
    assert str(StreamId.parse("1732270000123-7")) == "1732270000123-7"


async def test_read_after_of_an_unknown_stream_has_no_epoch(journal: Journal, unique: str):
    page = await journal.read_after(Target.topic(unique), ZERO_ID, limit=10)
    assert page.epoch is None and page.entries == []


async def test_trimming_leaves_a_broken_previous_chain(unique: str):
    """MAXLEN trimming is visible: the oldest kept entry points at an entry that is gone."""
    journal = MemoryJournal(JournalLimits(stream_maxlen=10))
    t = Target.user(unique)
    results = await journal.publish_many([PublishRequest(t, "demo.n", {}) for _ in range(30)])
    first = (await journal.read_after(t, ZERO_ID, limit=100)).entries[0]
    assert first.previous is not None and first.previous < first.id
    assert first.previous in {r.id for r in results}


async def test_source_and_id_are_unique_across_streams(journal: Journal, unique: str):
    """Two streams can give the same entry id; their sources differ (CloudEvents
    requires source + id to be unique)."""
    seen = set()
    for target in (Target.user(unique), Target.user(unique + "x"), Target.topic(unique)):
        for _ in range(3):
            await journal.publish(target, "a.b", {})
        page = await journal.read_after(target, ZERO_ID, limit=10)
        for entry in page.entries:
            env = orjson.loads(entry.envelope)
            seen.add((env["source"], env["id"]))
    assert len(seen) == 9
    sources = {s for s, _ in seen}
    assert sources == {
        f"/herald/users/{unique}",
        f"/herald/users/{unique}x",
        f"/herald/topics/{unique}",
    }


@pytest.mark.parametrize(
    "source", ["not a uri", "/x?query=1", "/x#frag", "/bad%zz", "/a\nb", "/" + "a" * 600]
)
async def test_a_source_that_is_not_a_uri_reference_is_refused(journal: Journal, source: str):
    with pytest.raises(InvalidEnvelope):
        await journal.publish(Target.topic("t"), "a.b", {}, source=source)

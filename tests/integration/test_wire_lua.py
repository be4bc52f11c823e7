"""The Lua publish scripts write live frames that ``herald.journal.wire`` decodes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from herald.journal.base import JournalLimits
from herald.journal.messages import producer
from herald.journal.messages.keys import channel_of, seq_key_of
from herald.journal.messages.store import message_envelope
from herald.journal.positions import Target
from herald.journal.redis import RedisJournal
from herald.journal.wire import MESSAGE_EPOCH, Frame, decode_frame
from herald.streams.hub import parse_frame

pytestmark = pytest.mark.integration


async def _frames(pubsub: aioredis.client.PubSub, n: int) -> list[bytes]:
    out: list[bytes] = []
    async with asyncio.timeout(5):
        while len(out) < n:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if msg is not None:
                out.append(msg["data"])
    return out


async def test_journal_publish_frames_decode(real_redis: aioredis.Redis, unique: str):
    journal = RedisJournal(real_redis, JournalLimits())
    target = Target.user(unique)
    async with real_redis.pubsub() as pubsub:
        await pubsub.subscribe(target.channel)
        first = await journal.publish(target, "demo.one", {"text": "two words"})
        second = await journal.publish(target, "demo.two", {})
        frames = await _frames(pubsub, 2)
    entries = (await journal.read_after(target, first.id.__class__(0, 0), limit=10)).entries
    lives = [parse_frame(target.channel, f) for f in frames]
    assert [x.id for x in lives] == [first.id, second.id]
    assert [x.previous for x in lives] == [None, first.id]
    assert {x.epoch for x in lives} == {first.epoch}
    assert [x.envelope for x in lives] == [e.envelope for e in entries]


async def test_message_publish_frames_decode(real_redis: aioredis.Redis):
    message_id = uuid.uuid4()
    script = real_redis.register_script(producer._SCRIPT)
    tails = [
        message_envelope(message_id, None, t, b"{}", datetime.now(UTC)) for t in ("answer", "end")
    ]
    channel = channel_of(message_id)
    try:
        async with real_redis.pubsub() as pubsub:
            await pubsub.subscribe(channel)
            keys = [seq_key_of(message_id), channel]
            last = await script(keys=keys, args=[-1, 60, *producer._FRAME_ARGS, *tails])
            frames = await _frames(pubsub, 2)
    finally:
        await real_redis.delete(seq_key_of(message_id))
    assert last == 1
    assert [decode_frame(f) for f in frames] == [
        Frame(MESSAGE_EPOCH, b"", b"0", b'{"specversion":"1.0","id":"0' + tails[0]),
        Frame(MESSAGE_EPOCH, b"0", b"1", b'{"specversion":"1.0","id":"1' + tails[1]),
    ]

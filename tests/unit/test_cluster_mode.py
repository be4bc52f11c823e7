"""Cluster mode's pure parts: settings, the slot map, the sharded publish script."""

from __future__ import annotations

import fakeredis
import pytest
from redis.asyncio.cluster import RedisCluster

from herald.journal.positions import Target
from herald.journal.runtime.settings import Settings, SettingsError
from herald.journal.runtime.sharded import publish_script
from herald.streams.hub_cluster import SlotMap, SlotMoved, slot_of

DB = "postgresql+psycopg://u@127.0.0.1/db"


def test_cluster_nodes_parse_from_commas_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_REDIS_CLUSTER_NODES", "127.0.0.1:7001, 127.0.0.1:7002")
    s = Settings.load(redis_url="redis://127.0.0.1:7000", redis_cluster=True, database_url=DB)
    assert s.redis_cluster_nodes == ["127.0.0.1:7001", "127.0.0.1:7002"]
    monkeypatch.setenv("HERALD_REDIS_CLUSTER_NODES", '["127.0.0.1:7003"]')
    s = Settings.load(redis_url="redis://127.0.0.1:7000", redis_cluster=True, database_url=DB)
    assert s.redis_cluster_nodes == ["127.0.0.1:7003"]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"redis_cluster": True, "redis_url": "memory://"}, "HERALD_REDIS_CLUSTER needs"),
        ({"redis_cluster": True, "redis_url": "unix:///tmp/r.sock"}, "HERALD_REDIS_CLUSTER needs"),
        (
            {"redis_url": "redis://127.0.0.1:7000", "redis_cluster_nodes": ["127.0.0.1:7001"]},
            "HERALD_REDIS_CLUSTER is not",
        ),
        (
            {"redis_url": "redis://h:1", "redis_cluster": True, "redis_cluster_nodes": ["nohost"]},
            "HERALD_REDIS_CLUSTER_NODES",
        ),
    ],
)
def test_bad_cluster_settings_are_refused_by_name(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.load(database_url=DB, **overrides)


def test_a_streams_keys_and_channel_share_one_slot() -> None:
    t = Target.user("alice")
    assert len({slot_of(k) for k in (t.stream_key, t.meta_key, t.channel)}) == 1


SLOTS_REPLY = [
    [0, 5460, [b"127.0.0.1", 7000, b"id0"], [b"127.0.0.1", 7003, b"id3"]],
    [5461, 10922, [b"", 7001, b"id1"]],
    [10923, 16383, [b"127.0.0.1", 7002, b"id2"]],
]


@pytest.mark.parametrize(
    ("slot", "owner"),
    [
        (0, ("127.0.0.1", 7000)),
        (5460, ("127.0.0.1", 7000)),
        (5461, ("10.9.9.9", 7001)),  # an empty host is the node that was asked
        (16383, ("127.0.0.1", 7002)),
    ],
)
def test_the_slot_map_names_each_slots_primary(slot: int, owner: tuple[str, int]) -> None:
    slots = SlotMap.parse(SLOTS_REPLY, ("10.9.9.9", 7001))
    assert slots.owner(slot) == owner
    assert len(slots.primaries) == 3


def test_an_unserved_slot_means_the_map_is_stale() -> None:
    slots = SlotMap.parse(SLOTS_REPLY[:1], ("127.0.0.1", 7000))
    with pytest.raises(SlotMoved):
        slots.owner(9000)
    with pytest.raises(SlotMoved):
        SlotMap.parse([], ("127.0.0.1", 7000))


def test_the_publish_script_uses_spublish_only_on_a_cluster() -> None:
    source = "redis.call('XADD', KEYS[1])\nredis.call('PUBLISH', ARGV[4], msg)\n"
    plain = publish_script(source, fakeredis.FakeAsyncRedis())
    assert plain == source
    cluster = RedisCluster.__new__(RedisCluster)  # never connected: only its class matters
    sharded = publish_script(source, cluster)
    assert "redis.call('SPUBLISH', ARGV[4], msg)" in sharded and "'PUBLISH'" not in sharded
    with pytest.raises(ValueError, match="publishes nothing"):
        publish_script("return 1", cluster)

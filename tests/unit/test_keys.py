"""Redis key names: every string is stored data, and the keys one script touches
together share a Redis Cluster slot (their hash tag)."""

from __future__ import annotations

import uuid

import pytest
from redis.crc import key_slot

from herald.api.keys import sse_session_key, ticket_key
from herald.journal import keys as record_keys
from herald.journal.messages.keys import channel_of, seq_key_of
from herald.journal.oauth.keys import pending_key
from herald.journal.positions import Target
from herald.journal.tasks.keys import WORKERS_KEY, dead_key, retry_key, status_key, tasks_key
from herald.streams.keys import connections_key, hub_control_channel, replays_key

MESSAGE = uuid.UUID("6f1c0a4e-3b2d-4c5e-9f10-0123456789ab")
SHA_OF_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize(
    ("made", "expected"),
    [
        (Target.user("42").stream_key, "herald:{u:42}:stream"),
        (Target.user("42").meta_key, "herald:{u:42}:meta"),
        (Target.user("42").channel, "herald:{u:42}"),
        (Target.user("42").idempotency_key("k1"), "herald:{u:42}:idem:k1"),
        (Target.topic("printers").stream_key, "herald:{t:printers}:stream"),
        (Target.topic("printers").meta_key, "herald:{t:printers}:meta"),
        (Target.topic("printers").channel, "herald:{t:printers}"),
        (record_keys.stream_key(record_keys.hash_tag("t", "x")), "herald:{t:x}:stream"),
        (channel_of(MESSAGE), f"herald:{{m:{MESSAGE}}}"),
        (seq_key_of(MESSAGE), f"herald:{{m:{MESSAGE}}}:seq"),
        (tasks_key("default"), "herald:{q:default}:tasks"),
        (retry_key("default"), "herald:{q:default}:retry"),
        (dead_key("default"), "herald:{q:default}:dead"),
        (status_key("t1"), "herald:{task:t1}:status"),
        (WORKERS_KEY, "herald:workers"),
        (pending_key("abc"), f"herald:oauth:state:{SHA_OF_ABC}"),
        (connections_key("42"), "herald:{u:42}:conns"),
        (replays_key("42"), "herald:{u:42}:replays"),
        (hub_control_channel("00ff"), "herald:hub:00ff"),
        (ticket_key("tkt"), "herald:ticket:tkt"),
        (sse_session_key("abc"), f"herald:sse-session:{SHA_OF_ABC}"),
    ],
)
def test_key_names_are_the_stored_ones(made: str, expected: str) -> None:
    assert made == expected


def _slots(*keys: str) -> set[int]:
    return {key_slot(k.encode()) for k in keys}


@pytest.mark.parametrize("target", [Target.user("42"), Target.topic("printers")])
def test_a_stream_its_metadata_idempotency_keys_and_channel_share_a_slot(target: Target) -> None:
    keys = (target.stream_key, target.meta_key, target.channel, target.idempotency_key("k"))
    assert len(_slots(*keys)) == 1


def test_a_users_budgets_share_the_slot_of_the_users_stream() -> None:
    user = Target.user("42")
    assert _slots(user.stream_key, connections_key("42"), replays_key("42")) == _slots(
        user.stream_key
    )


def test_a_messages_counter_and_channel_share_a_slot() -> None:
    assert len(_slots(seq_key_of(MESSAGE), channel_of(MESSAGE))) == 1


def test_a_queues_tasks_retries_and_dead_letters_share_a_slot() -> None:
    assert len(_slots(tasks_key("q1"), retry_key("q1"), dead_key("q1"))) == 1


def test_the_tag_is_what_redis_hashes() -> None:
    # Without the braces the three keys of one stream would scatter over slots.
    assert key_slot(b"herald:{u:42}:stream") == key_slot(b"u:42")
    assert len(_slots("herald:u:42:stream", "herald:u:42:meta", "herald:u:42")) > 1

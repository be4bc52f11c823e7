"""Lua script calls sent in one pipeline, on one server or on Redis Cluster."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

__all__ = ["evalsha_pipelined"]


Call = tuple[Sequence[Any], Sequence[Any]]  # a script call's keys and its other arguments


async def evalsha_pipelined(
    client: aioredis.Redis, script: AsyncScript, calls: Sequence[Call]
) -> list[Any]:
    """Run ``script`` once per ``(keys, args)`` in ``calls``, in one round trip; the
    replies in order.  An error reply raises, after every call has run.

    Plain EVALSHA commands: redis-py's Script-in-pipeline path sends SCRIPT EXISTS
    first, a second round trip every time, and RedisCluster's pipeline refuses
    ``.evalsha`` yet routes a raw EVALSHA by its keys like any command.  If the
    server lost the script (restart, failover, SCRIPT FLUSH), every call fails with
    NOSCRIPT before running anything, so loading it and resending is safe."""
    for attempt in (1, 2):
        async with client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            try:
                return list(await pipe.execute())
            except NoScriptError:
                if attempt == 2:
                    raise
        await client.script_load(script.script)
    raise AssertionError("unreachable")

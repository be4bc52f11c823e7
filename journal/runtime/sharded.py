"""Live publish on one server or on Redis Cluster: ``PUBLISH`` or ``SPUBLISH``.

Plain pub/sub on a cluster copies every message to every node; sharded pub/sub
(Redis 7) keeps it on the shard that owns the channel's slot.  Every live channel
carries its stream's hash tag, so a script that touches the stream may also
``SPUBLISH`` to its channel.  The scripts are written with ``PUBLISH`` (Redis 6.2,
the embedded default, has no ``SPUBLISH``) and the cluster variant is derived here,
so the two can never drift apart.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from herald.journal.runtime.cluster import is_cluster

__all__ = ["live_publish", "publish_script"]

_PLAIN = "redis.call('PUBLISH', "
_SHARDED = "redis.call('SPUBLISH', "


def publish_script(source: str, client: object) -> str:
    """``source`` as it must run on ``client``: every live ``PUBLISH`` becomes
    ``SPUBLISH`` when ``client`` talks to a cluster."""
    if _PLAIN not in source:
        raise ValueError("the script publishes nothing")
    return source.replace(_PLAIN, _SHARDED) if is_cluster(client) else source


async def live_publish(client: aioredis.Redis, channel: str, message: bytes) -> None:
    """Publish one live message outside a script, as the scripts do on ``client``."""
    command = "SPUBLISH" if is_cluster(client) else "PUBLISH"
    await client.execute_command(command, channel, message)  # type: ignore[no-untyped-call]

"""The connection ``RedisHub`` reads: the few calls it makes, as a protocol.

On one server it is a bare redis-py ``Connection``; on Redis Cluster it is a
``ShardedConnection`` (``herald.streams.hub_cluster``), one object over one sharded
pub/sub connection per primary that speaks the same calls.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["PubSubConnection"]


class PubSubConnection(Protocol):
    """What the hub needs: connect, send SUBSCRIBE / UNSUBSCRIBE / PING, read pub/sub
    replies (``[b"message", channel, data]``, ``[b"subscribe", channel, n]`` …, or
    None when ``timeout`` passed with nothing to read), and drop the connection.
    Any exception from ``read_response`` means the connection is gone: the hub makes
    a new one, subscribes everything again and tells its subscribers to RESYNC."""

    @property
    def is_connected(self) -> bool: ...

    async def connect(self) -> None: ...

    async def send_command(self, *args: Any, **kwargs: Any) -> None: ...

    async def read_response(
        self,
        disable_decoding: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 - redis-py's signature
        *,
        disconnect_on_error: bool = True,
        push_request: bool | None = False,
    ) -> Any: ...

    async def disconnect(self, nowait: bool = False) -> None: ...

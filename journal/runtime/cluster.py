"""The command client for Redis Cluster (``HERALD_REDIS_CLUSTER``).

redis-py's asyncio ``RedisCluster`` follows ``MOVED``/``ASK`` and refreshes its slot
map after a failover by itself.  Two things it does differently from the one-server
client, and that Herald changes back:

* Its per-node pool raises ``MaxConnectionsError`` when a burst needs more
  connections than allowed, where the one-server client makes the burst wait.  A
  process-wide gate of ``HERALD_REDIS_MAX_CONNECTIONS`` commands (or pipelines) in
  flight restores waiting, and bounds the connections any one node can be given.
* A call's retries are not bounded in time: against a frozen node (stopped, not
  dead) it takes its socket timeout once per retry.  As ``BoundedRedis`` does on
  one server, one deadline of ``HERALD_REDIS_SOCKET_TIMEOUT_S`` covers the whole
  call, the wait at the gate included.
* It is a different class from ``redis.asyncio.Redis``.  The code is written against
  the commands both share (single-slot commands, Lua, non-transactional pipelines),
  so the client is handed around typed as ``Redis``; ``is_cluster`` tells the few
  places that must act differently (the publish scripts use ``SPUBLISH``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import TimeoutError as RedisTimeoutError

from herald.journal.runtime.multiplex import NodeLinks, linked_connection_class
from herald.journal.runtime.settings import Settings

__all__ = ["GatedRedisCluster", "is_cluster", "make_cluster", "node_address", "node_links"]


def node_address(node: str) -> tuple[str, int]:
    """``host:port`` (settings validated it) as a pair."""
    host, _, port = node.rpartition(":")
    return host.strip("[]"), int(port)


# Set while this task runs a command or pipeline of the client (see ``aclose``).
_IN_CALL: contextvars.ContextVar[bool] = contextvars.ContextVar("herald_in_call", default=False)


class _GatedPipeline(ClusterPipeline):
    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        client = cast(GatedRedisCluster, self.cluster_client)
        async with client.bounded("a pipeline"), client.gate:
            return await super().execute(raise_on_error, allow_redirections)


class GatedRedisCluster(RedisCluster):
    """``RedisCluster`` whose commands and pipelines wait for one of ``in_flight`` slots."""

    def __init__(
        self,
        *args: Any,
        in_flight: int,
        deadline_s: float | None = None,
        links: NodeLinks | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs["max_connections"] = in_flight  # per node; the gate bounds them all
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Semaphore(in_flight)
        self.deadline_s = deadline_s  # None: blocking reads, bounded by their own timeout
        self.links = links
        if links is not None:
            # One socket per node (``multiplex``): every node this client makes from
            # now on, and the start nodes it already made, speak through the links.
            # Half the call's deadline: time for a retry on the node that took over.
            half = None if deadline_s is None else deadline_s / 2
            linked = linked_connection_class(links, read_timeout_s=half)
            self.nodes_manager.connection_kwargs["connection_class"] = linked
            for node in self.nodes_manager.startup_nodes.values():
                node.connection_class = linked

    async def initialize(self, *args: Any, **kwargs: Any) -> GatedRedisCluster:
        await super().initialize(*args, **kwargs)
        if self.links is not None:
            # The map may have been read from a replica or a node that is one no
            # more: commands go to primaries only, so keep links to them only.
            await self.links.keep_only({(n.host, int(n.port)) for n in self.get_primaries()})
        return self

    async def aclose(self) -> None:
        await super().aclose()
        # redis-py also calls aclose() itself, inside a call (after CLUSTERDOWN, a
        # run of MOVED, a failed pipeline) to drop its node objects: the links stay
        # then, or every command in flight on every node, and the hub, would fail.
        if self.links is not None and not _IN_CALL.get():
            await self.links.aclose()

    @contextlib.asynccontextmanager
    async def bounded(self, what: str) -> AsyncIterator[None]:
        """Raise redis-py's ``TimeoutError`` (a ``RedisError``) once ``deadline_s`` is up."""
        inside = _IN_CALL.set(True)
        try:
            async with asyncio.timeout(self.deadline_s):
                yield
        except TimeoutError as e:
            raise RedisTimeoutError(
                f"Redis Cluster did not answer {what} within {self.deadline_s:g} s"
            ) from e
        finally:
            _IN_CALL.reset(inside)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.bounded(str(args[0]) if args else "a command"), self.gate:
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # raises, as upstream does
        return _GatedPipeline(self, transaction)  # type: ignore[abstract]


def make_cluster(settings: Settings, *, blocking: bool = False) -> aioredis.Redis:
    """The cluster command client: starts from ``HERALD_REDIS_URL`` and
    ``HERALD_REDIS_CLUSTER_NODES``, bytes replies, the same timeouts as ``make_redis``.

    ``blocking``: the worker's client for blocking reads instead (one command at a
    time, no socket timeout), like ``blocking_client`` on one server."""
    from herald.journal.runtime.clients import keepalive_options

    startup = [ClusterNode(*node_address(n)) for n in settings.redis_cluster_nodes]
    links = None if blocking else node_links(settings)
    client = GatedRedisCluster.from_url(
        settings.redis_url,
        in_flight=1 if blocking else settings.redis_max_connections,
        deadline_s=None if blocking else settings.redis_socket_timeout_s,
        links=links,
        startup_nodes=startup or None,
        socket_timeout=None if blocking else settings.redis_socket_timeout_s,
        socket_connect_timeout=settings.redis_socket_timeout_s,
        health_check_interval=0 if blocking else settings.redis_health_check_interval_s,
        socket_keepalive=True,
        socket_keepalive_options=keepalive_options(),
        # A failover takes a few seconds: retry long enough to follow the promoted
        # replica, short enough that a publisher hears "unavailable" in seconds.
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=8),
    )
    return cast(aioredis.Redis, client)


def node_links(settings: Settings) -> NodeLinks:
    """Links to cluster nodes: TCP keepalive, credentials and TLS from the URL, RESP3
    (what redis-py's connections speak by default, and what lets the hub's pub/sub
    pushes share the socket with the commands)."""
    from herald.journal.runtime.clients import keepalive_options

    url = parse_url(settings.redis_url)
    return NodeLinks(
        protocol=3,
        tls=settings.redis_url.startswith("rediss://"),
        timeout_s=settings.redis_socket_timeout_s,
        username=url.get("username"),
        password=url.get("password"),
        keepalive_options=keepalive_options(),
    )


def is_cluster(client: object) -> bool:
    """True for a Redis Cluster command client (``make_cluster``'s or any ``RedisCluster``)."""
    return isinstance(client, RedisCluster)

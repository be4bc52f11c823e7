"""What the lifespan builds once and every handler receives: a typed state."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import HTTPConnection

from herald.api.auth import Authenticator, Principal
from herald.api.members.directory import MemberDirectory, make_member_directory
from herald.api.printer_status import printer_probe_check
from herald.api.readiness import ReadinessRegistry, default_registry
from herald.api.tickets import MemoryTicketStore, RedisTicketStore, TicketStore
from herald.journal.base import Journal
from herald.journal.memory import MemoryJournal
from herald.journal.messages.producer import MessageStreams, new_writer
from herald.journal.messages.writer import MessageWriter
from herald.journal.page_events.service import PageEvents
from herald.journal.printers.store import register_all
from herald.journal.runtime.clients import make_journal, make_redis, pubsub_pool
from herald.journal.runtime.cluster import GatedRedisCluster
from herald.journal.runtime.db import make_engine
from herald.journal.runtime.settings import Settings
from herald.journal.tasks.queue import TaskQueue
from herald.streams.budget import BudgetLimits, Budgets, LeaseKeeper, MemoryBudgets
from herald.streams.budget_redis import RedisBudgets
from herald.streams.hub import Hub
from herald.streams.hub_cluster import ShardedConnections
from herald.streams.hub_memory import MemoryHub
from herald.streams.hub_redis import RedisHub
from herald.streams.pubsub import PubSubConnection

__all__ = ["AppState", "open_state", "state_of"]


@dataclass(slots=True)
class AppState:
    settings: Settings
    auth: Authenticator
    journal: Journal
    tickets: TicketStore
    hub: Hub
    budgets: Budgets
    leases: LeaseKeeper
    redis: aioredis.Redis | None = None
    engine: AsyncEngine | None = None  # None: no database configured (memory:// tests)
    writer: MessageWriter | None = None  # chat message streams need Redis and PostgreSQL
    messages: MessageStreams | None = None
    tasks: TaskQueue | None = None  # the task queue needs Redis (None with memory://)
    members: MemberDirectory | None = None  # None: no member directory configured
    page_events: PageEvents | None = None  # page events need PostgreSQL
    started_at: float = field(default_factory=time.time)
    # Deep checks for GET /readiness; features add theirs with readiness.add(Check(...)).
    readiness: ReadinessRegistry = field(default_factory=default_registry)
    open_streams: int = 0  # GET /api/events streams open in this process
    closing: bool = False  # the process is shutting down: streams end at once

    async def principal(self, conn: HTTPConnection) -> Principal:
        return await self.auth.authenticate(conn, self.tickets)

    def close_streams(self) -> None:
        """End every open stream, and any requested from now on (``closing``: see
        ``herald.api.events.ended_at_once``).  The listening socket closes a moment
        after the signal; a client reconnecting in between would otherwise hold a
        stream until the shutdown's deadline cuts it."""
        self.closing = True
        self.hub.close_all()


def budget_limits(settings: Settings) -> BudgetLimits:
    return BudgetLimits(
        max_connections=settings.max_connections_per_user,
        lease_s=settings.connection_lease_s,
        replay_budget=settings.replay_budget,
        replay_window_s=settings.replay_window_s,
    )


def memory_state(settings: Settings, auth: Authenticator) -> AppState:
    """Everything in-process (``memory://``, tests): no Redis at all."""
    journal = make_journal(settings, None)
    assert isinstance(journal, MemoryJournal)
    budgets = MemoryBudgets(budget_limits(settings))
    state = AppState(
        settings,
        auth,
        journal,
        MemoryTicketStore(settings.ticket_ttl_s),
        MemoryHub(journal),
        budgets,
        LeaseKeeper(budgets),
    )
    state.readiness.add(printer_probe_check())
    return state


def hub_ping_s(settings: Settings) -> float:
    return min(5.0, settings.keepalive_s)


def hub_connection_factory(
    settings: Settings, client: aioredis.Redis | None = None
) -> Callable[[], PubSubConnection]:
    """New connections for the hub: they block on reads (no socket timeout) and the
    hub handles reconnects itself, pinging to detect a dead peer.  On Redis Cluster
    one "connection" is sharded pub/sub on each primary, over the same connection
    as the command ``client``'s commands to that primary."""
    if settings.redis_cluster:
        links = client.links if isinstance(client, GatedRedisCluster) else None
        return ShardedConnections.from_settings(
            settings, ping_interval_s=hub_ping_s(settings), links=links
        )
    pool = pubsub_pool(settings)
    return pool.make_connection


@contextlib.asynccontextmanager
async def open_state(settings: Settings, auth: Authenticator) -> AsyncIterator[AppState]:
    """Build the clients for the configured URLs, start the background parts, and
    close everything on exit, in reverse order."""
    if settings.redis_url.startswith("memory://"):
        state = memory_state(settings, auth)
        state.members = make_member_directory(settings, None)  # uncached: no Redis
        state.leases.start()
        try:
            yield state
        finally:
            await state.leases.aclose()
            if state.members is not None:
                await state.members.aclose()
        return
    client = make_redis(settings)
    hub = RedisHub(
        hub_connection_factory(settings, client),
        ping_interval_s=hub_ping_s(settings),
        pong_timeout_s=settings.redis_socket_timeout_s,
    )
    budgets = RedisBudgets(client, budget_limits(settings))
    state = AppState(
        settings,
        auth,
        make_journal(settings, client),
        RedisTicketStore(client, settings.ticket_ttl_s),
        hub,
        budgets,
        LeaseKeeper(budgets),
        redis=client,
        engine=make_engine(settings) if settings.database_url else None,
    )
    state.tasks = TaskQueue(client, state.journal, settings)
    state.members = make_member_directory(settings, client)
    state.readiness.add(printer_probe_check())
    if state.engine is not None:
        state.writer = new_writer(settings, state.engine)
        state.messages = MessageStreams(
            engine=state.engine, redis=client, writer=state.writer, settings=settings
        )
        process_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        state.page_events = PageEvents.build(
            settings, state.engine, client, state.journal, process_id
        )
    try:
        await hub.start()
        state.leases.start()
        if state.writer is not None:
            state.writer.start()
        if state.engine is not None:
            await register_all(state.engine, settings.printers)  # HERALD_PRINTERS
        if state.page_events is not None:
            state.page_events.start()
        yield state
    finally:
        if state.page_events is not None:
            await state.page_events.aclose()
        await state.leases.aclose()
        await hub.aclose()
        if state.writer is not None:
            await state.writer.aclose()
        if state.engine is not None:
            await state.engine.dispose()
        if state.members is not None:
            await state.members.aclose()
        await client.aclose()


def state_of(conn: HTTPConnection) -> AppState:
    state: AppState = conn.app.state.herald
    return state

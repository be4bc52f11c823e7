"""The Python API for programs outside the server: ``from herald import connect``.

    async with connect() as herald:
        await herald.publish("source.ingest.progress", {"current": 1}, user="alice")
        async with herald.message_stream(message_id, "alice") as answer:
            await answer.emit("answer", {"text": "Hel"})
        task_id = await herald.enqueue("image.resize", "alice", {"pages": 12})

``connect()`` reads the ``HERALD_*`` settings and, for a Redis or PostgreSQL URL
they leave empty, finds the ``herald serve`` running on the data folder, as the
``herald`` command does. The object owns its clients: leaving the ``async with``
block waits until every message event is stored, then closes them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from herald.journal.base import PublishRequest, PublishResult
from herald.journal.messages.producer import MessageStream, MessageStreams, new_writer
from herald.journal.messages.writer import MessageWriter
from herald.journal.positions import Target
from herald.journal.redis import RedisJournal
from herald.journal.runtime.clients import journal_limits, make_redis
from herald.journal.runtime.db import make_engine
from herald.journal.runtime.discovery import NotRunning, resolve_services
from herald.journal.runtime.settings import Settings
from herald.journal.tasks.queue import TaskQueue

__all__ = ["Herald", "MessagesUnavailable", "NotConnected", "connect", "event"]


class MessagesUnavailable(Exception):
    """Message streams need PostgreSQL, and no database URL is configured or found."""

    code = "messages_unavailable"


class NotConnected(RuntimeError):
    """The object was used outside its ``async with`` block."""


def _target(user: str | None, topic: str | None) -> Target:
    if user is not None and topic is None:
        return Target.user(user)
    if topic is not None and user is None:
        return Target.topic(topic)
    raise ValueError("give exactly one of user= or topic=")


def event(
    type_: str,
    data: dict[str, Any],
    *,
    user: str | None = None,
    topic: str | None = None,
    source: str | None = None,
    idempotency_key: str | None = None,
) -> PublishRequest:
    """One event for ``Herald.publish_many``: to a user's stream or a topic."""
    return PublishRequest(_target(user, topic), type_, data, source, idempotency_key)


class Herald:
    """Publish events, produce chat message streams and enqueue tasks.

    Build it with ``connect()``; clients passed in (``redis``, ``engine``) are the
    caller's to close, the ones it builds itself are closed on exit.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        redis: aioredis.Redis | None = None,
        engine: AsyncEngine | None = None,
    ) -> None:
        self.settings = settings
        self._given_redis = redis
        self._given_engine = engine
        self._redis: aioredis.Redis | None = None
        self._engine: AsyncEngine | None = None
        self._writer: MessageWriter | None = None
        self._journal: RedisJournal | None = None
        self._tasks: TaskQueue | None = None
        self._messages: MessageStreams | None = None

    async def __aenter__(self) -> Herald:
        settings = self.settings
        self._redis = self._given_redis or make_redis(settings)
        self._journal = RedisJournal(self._redis, journal_limits(settings))
        self._tasks = TaskQueue(self._redis, self._journal, settings)
        self._engine = self._given_engine
        if self._engine is None and settings.database_url:
            self._engine = make_engine(settings)  # connects on first use
        if self._engine is not None:
            self._writer = new_writer(settings, self._engine)
            self._writer.start()
            self._messages = MessageStreams(
                engine=self._engine, redis=self._redis, writer=self._writer, settings=settings
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        writer, redis, engine = self._writer, self._redis, self._engine
        self._writer = self._redis = self._engine = None
        self._journal = self._tasks = self._messages = None
        try:
            if writer is not None:
                await writer.aclose()  # flushes what the message streams left
        finally:
            if redis is not None and self._given_redis is None:
                await redis.aclose()
            if engine is not None and self._given_engine is None:
                await engine.dispose()

    def _open_journal(self) -> RedisJournal:
        if self._journal is None:
            raise NotConnected("use the Herald object inside `async with connect() as herald:`")
        return self._journal

    def _open_tasks(self) -> TaskQueue:
        if self._tasks is None:
            raise NotConnected("use the Herald object inside `async with connect() as herald:`")
        return self._tasks

    async def publish(
        self,
        type_: str,
        data: dict[str, Any],
        *,
        user: str | None = None,
        topic: str | None = None,
        source: str | None = None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        """Append one event to a user's stream or a topic and fan it out live, in one
        atomic round trip.  Raises ``InvalidEnvelope`` / ``EnvelopeTooLarge`` before
        anything is sent, ``JournalUnavailable`` when Redis does not answer (nothing
        was published; retry with the same ``idempotency_key``)."""
        target = _target(user, topic)
        return await self._open_journal().publish(
            target, type_, data, source=source, idempotency_key=idempotency_key
        )

    async def publish_many(self, events: Iterable[PublishRequest]) -> list[PublishResult]:
        """Publish a batch (build each with ``herald.event``) in one pipeline; the
        results are in the order given."""
        return await self._open_journal().publish_many(list(events))

    def message_stream(self, message_id: uuid.UUID | str, user: str) -> MessageStream:
        """``async with`` it to produce one chat answer owned by ``user`` (a new
        message, or a continuation of ``user``'s existing one); see
        ``herald.journal.messages.producer`` for what happens on exit."""
        if self._redis is None:
            raise NotConnected("use the Herald object inside `async with connect() as herald:`")
        if self._messages is None:
            raise MessagesUnavailable(
                "message streams need PostgreSQL: set HERALD_DATABASE_URL, "
                "or run `herald serve` on the embedded default"
            )
        return self._messages.message_stream(message_id, user)

    async def enqueue(
        self,
        kind: str,
        user: str,
        payload: dict[str, Any] | None = None,
        *,
        context: dict[str, Any] | None = None,
        queue: str = "default",
        max_attempts: int | None = None,
        events: str = "",
    ) -> str:
        """Queue a task of ``kind`` owned by ``user`` and return its id; its lifecycle
        (``<kind>.queued`` … ``.completed`` | ``.failed``, or under ``events``) goes to
        ``user``'s stream.  Raises ``InvalidTask`` / ``TaskTooLarge`` before touching
        Redis, ``TaskQueueUnavailable`` or ``JournalUnavailable`` when Redis fails."""
        return await self._open_tasks().enqueue(
            kind,
            user,
            payload or {},
            context=context,
            queue=queue,
            max_attempts=max_attempts,
            events=events,
        )

    async def task_status(self, task_id: str) -> dict[str, Any] | None:
        """``{"task_id", "kind", "user", "status", …}`` (``result`` or ``error`` once
        final), or None for an unknown or expired task."""
        return await self._open_tasks().status(task_id)


def connect(
    settings: Settings | None = None,
    *,
    data_dir: str | Path | None = None,
    redis_url: str | None = None,
    database_url: str | None = None,
) -> Herald:
    """A ``Herald`` for ``async with``.

    Without arguments the settings come from the environment (``HERALD_*``); a
    Redis or PostgreSQL URL left empty is taken from the ``herald serve`` running on
    the data folder (``HERALD_DATA_DIR``, default ``.herald`` in the current
    directory).  Raises ``NotRunning`` when no Redis URL is set and no server runs
    there, ``SettingsError`` for a bad setting.  Without any PostgreSQL, publishing
    and tasks work and ``message_stream`` raises ``MessagesUnavailable``.
    """
    if settings is None:
        overrides: dict[str, object] = {}
        if data_dir is not None:
            overrides["data_dir"] = Path(data_dir)
        if redis_url is not None:
            overrides["redis_url"] = redis_url
        if database_url is not None:
            overrides["database_url"] = database_url
        settings = Settings.load(**overrides)
    elif data_dir is not None or redis_url is not None or database_url is not None:
        raise TypeError("give either settings or data_dir/redis_url/database_url, not both")
    if settings.embedded:
        try:
            settings = resolve_services(settings)
        except NotRunning:
            if not settings.redis_url:
                raise
    if settings.redis_url.startswith("memory://"):
        raise ValueError(
            "HERALD_REDIS_URL is memory://, an in-process journal no other program can "
            "reach; set a redis:// URL or run `herald serve` on the embedded default"
        )
    return Herald(settings)

"""What a task author writes against: the context a task runs with, its errors,
and the registry of task kinds.

A task is ``async def fn(ctx: TaskContext) -> dict | Deferred``.  The runtime
publishes its lifecycle to the owner's user stream, so the author never does:
``<events>.queued`` at enqueue, ``<events>.progress`` from ``ctx.progress``,
``<events>.completed`` with the returned dict, ``<events>.failed`` with an error
code and a short safe message.  Every one of those envelopes carries
``task_id`` and the task's ``context`` (e.g. ``source_id``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from sqlalchemy.ext.asyncio import AsyncEngine

    from herald.journal.base import Journal
    from herald.journal.runtime.settings import Settings
    from herald.journal.tasks.queue import TaskQueue

__all__ = [
    "DEFERRED",
    "Deferred",
    "TaskContext",
    "TaskError",
    "TaskFn",
    "TaskRegistry",
    "TaskSpec",
]


class Deferred:
    """Returned by a task whose outcome another task publishes later (the OAuth
    connect task waits for the browser's redirect): no ``completed`` event now."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DEFERRED"


DEFERRED: Final = Deferred()


class TaskError(Exception):
    """A task failure with a stable ``code`` and a short message safe to show a user.

    ``retry=False`` fails the task at once (bad input will not get better);
    otherwise the runtime retries with backoff up to ``max_attempts``.  Any other
    exception is reported as code ``internal_error`` with a generic message (the
    traceback goes to the log, never to the event).
    """

    def __init__(self, code: str, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry = retry


@dataclass(slots=True)
class TaskContext:
    """One attempt of one task, with the clients it may use."""

    task_id: str
    kind: str
    owner: str
    payload: dict[str, Any]
    context: dict[str, Any]
    attempt: int
    settings: Settings
    journal: Journal
    redis: aioredis.Redis
    engine: AsyncEngine | None
    queue: TaskQueue
    events: str  # type prefix of the lifecycle events, e.g. "source.ingest"
    _progress: Callable[[int, int, dict[str, Any]], Awaitable[None]] = field(repr=False)
    _publish: Callable[[str, dict[str, Any]], Awaitable[None]] = field(repr=False)

    async def progress(self, current: int, total: int, **data: Any) -> None:
        """Report progress; throttled to one event per percent and 10 per second."""
        await self._progress(current, total, data)

    async def publish(self, suffix: str, data: dict[str, Any]) -> None:
        """Publish ``<events>.<suffix>`` to the owner with ``task_id`` and the context."""
        await self._publish(suffix, data)


TaskFn = Callable[[TaskContext], Awaitable["dict[str, Any] | Deferred"]]


@dataclass(frozen=True, slots=True)
class TaskSpec:
    kind: str
    fn: TaskFn
    queue: str = "default"
    max_attempts: int | None = None  # None: HERALD_TASK_MAX_ATTEMPTS
    events: str = ""  # "" : the kind itself
    publish_queued: bool = True  # continuations of a task (same task_id) skip it

    @property
    def event_prefix(self) -> str:
        return self.events or self.kind


class TaskRegistry:
    """Task kinds by name.  ``@registry.task("source.ingest")`` registers one."""

    def __init__(self) -> None:
        self._specs: dict[str, TaskSpec] = {}

    def task(
        self,
        kind: str,
        *,
        queue: str = "default",
        max_attempts: int | None = None,
        events: str = "",
        publish_queued: bool = True,
    ) -> Callable[[TaskFn], TaskFn]:
        def register(fn: TaskFn) -> TaskFn:
            self.add(TaskSpec(kind, fn, queue, max_attempts, events, publish_queued))
            return fn

        return register

    def add(self, spec: TaskSpec) -> None:
        if spec.kind in self._specs:
            raise ValueError(f"task kind {spec.kind!r} is registered twice")
        self._specs[spec.kind] = spec

    def get(self, kind: str) -> TaskSpec | None:
        return self._specs.get(kind)

    def kinds(self) -> list[str]:
        return sorted(self._specs)

    def queues(self) -> list[str]:
        return sorted({s.queue for s in self._specs.values()})

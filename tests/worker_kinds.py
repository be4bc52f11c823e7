"""Task kinds for the worker tests, loadable by a real worker process with
``herald worker --tasks tests.worker_kinds`` (run from the repository root).

Kinds that must wait for the test block on a Redis list (``payload["gate"]``):
the test pushes to it when the task may finish, so nothing depends on timing.
"""

from __future__ import annotations

import os
import time
from typing import Any

from herald.workers.task import DEFERRED, Deferred, TaskContext, TaskError, TaskRegistry

# Monotonic start time of each attempt, by task id (in-process tests read it).
STARTS: dict[str, list[float]] = {}
CALLS: dict[str, int] = {}


def _started(ctx: TaskContext) -> None:
    STARTS.setdefault(ctx.task_id, []).append(time.monotonic())
    CALLS[ctx.task_id] = CALLS.get(ctx.task_id, 0) + 1


async def gate(ctx: TaskContext) -> dict[str, Any]:
    """Publishes ``<events>.started``, then waits until the test pushes to the gate."""
    _started(ctx)
    await ctx.publish("started", {"attempt": ctx.attempt, "pid": os.getpid()})
    # Short blocking pops: the shared client has a socket timeout.
    while await ctx.redis.blpop([ctx.payload["gate"]], timeout=1) is None:
        pass
    return {"attempt": ctx.attempt, "pid": os.getpid()}


async def flaky(ctx: TaskContext) -> dict[str, Any]:
    """Fails (retryably) until attempt ``succeed_at``."""
    _started(ctx)
    if ctx.attempt < ctx.payload["succeed_at"]:
        raise TaskError("not_yet", f"attempt {ctx.attempt} fails on purpose")
    return {"attempt": ctx.attempt}


async def broken(ctx: TaskContext) -> dict[str, Any]:
    """Always raises an unexpected error whose text must never reach an event."""
    _started(ctx)
    raise RuntimeError("secret internal detail /etc/passwd")


async def reject(ctx: TaskContext) -> dict[str, Any]:
    _started(ctx)
    raise TaskError("bad_input", "the input cannot be used", retry=False)


async def progress(ctx: TaskContext) -> dict[str, Any]:
    _started(ctx)
    total = ctx.payload["total"]
    for i in range(total + 1):
        await ctx.progress(i, total)
    return {"steps": total}


async def later(ctx: TaskContext) -> Deferred:
    _started(ctx)
    await ctx.publish("waiting", {})
    return DEFERRED


async def finish(ctx: TaskContext) -> dict[str, Any]:
    _started(ctx)
    return {"finished": True}


async def wrong(ctx: TaskContext) -> Any:
    _started(ctx)
    return ["not", "a", "dict"]


def register(registry: TaskRegistry) -> None:
    registry.task("test.gate")(gate)
    registry.task("test.flaky")(flaky)
    registry.task("test.broken", max_attempts=3)(broken)
    registry.task("test.reject")(reject)
    registry.task("test.progress")(progress)
    registry.task("test.later", events="test.two")(later)
    registry.task("test.finish", events="test.two", publish_queued=False)(finish)
    registry.task("test.wrong")(wrong)

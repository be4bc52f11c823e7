"""Maintenance job types: what a run of a job does, by the job's ``job_type``.

A job type is ``async def fn(ctx: JobContext) -> dict``: the dict is the run's
``result`` (counts), a ``JobError`` fails the run with a code and a message safe
to show, any other exception fails it as ``internal_error`` (traceback logged).
Adding one is one function and one line in a ``register`` function::

    async def audit_log_retention(ctx: JobContext) -> dict[str, Any]:
        ...
        return {"deleted": n}

    types.job("audit_log_retention", retention=True)(audit_log_retention)

``retention=True`` also makes it a part of ``retention_cleanup``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from herald.journal.maintenance.cutoff import Cutoff

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from sqlalchemy.ext.asyncio import AsyncEngine

    from herald.journal.base import Journal
    from herald.journal.maintenance.models import Run
    from herald.journal.runtime.settings import Settings

__all__ = [
    "JobContext",
    "JobError",
    "JobFn",
    "JobType",
    "JobTypes",
    "default_job_types",
    "noop",
]

MAX_NOOP_SLEEP_S = 3600.0


class JobError(Exception):
    """A run failed for a reason worth naming: ``code``, a safe ``message``, and the
    counts of whatever was done before it (``result``)."""

    def __init__(self, code: str, message: str, *, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.result = code, message, dict(result or {})


@dataclass(slots=True)
class JobContext:
    """One run of one job, with the clients it may use."""

    run: Run
    params: dict[str, Any]  # the job's params (retention_cleanup: per part, by name)
    settings: Settings
    engine: AsyncEngine
    redis: aioredis.Redis
    journal: Journal
    now: datetime  # when the run began (UTC): cutoffs are counted back from it
    job_types: JobTypes

    def seconds(self, name: str, default: int) -> int:
        """A whole, non-negative number of seconds from the params, else ``default``."""
        value = self.params.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise JobError("invalid_params", f"params.{name} must be a whole number >= 0")
        return value

    def cutoff(self, name: str, default_s: int) -> Cutoff | None:
        """Everything older than ``params[name]`` (default ``default_s``) seconds before
        the run began; None when that age is 0 (kept forever)."""
        age = self.seconds(name, default_s)
        return Cutoff.older_than(age, self.now) if age else None

    def part(self, name: str) -> JobContext:
        """The context for a part of this run, with that part's params."""
        params = self.params.get(name, {})
        if not isinstance(params, dict):
            raise JobError("invalid_params", f"params.{name} must be an object")
        return JobContext(
            self.run,
            params,
            self.settings,
            self.engine,
            self.redis,
            self.journal,
            self.now,
            self.job_types,
        )


JobFn = Callable[[JobContext], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class JobType:
    name: str
    fn: JobFn
    retention: bool = False  # a part of retention_cleanup


class JobTypes:
    """Job types by name, in registration order."""

    def __init__(self) -> None:
        self._types: dict[str, JobType] = {}

    def job(self, name: str, *, retention: bool = False) -> Callable[[JobFn], JobFn]:
        def register(fn: JobFn) -> JobFn:
            self.add(JobType(name, fn, retention))
            return fn

        return register

    def add(self, job_type: JobType) -> None:
        if job_type.name in self._types:
            raise ValueError(f"job type {job_type.name!r} is registered twice")
        self._types[job_type.name] = job_type

    def get(self, name: str) -> JobType | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return list(self._types)

    def retention_parts(self) -> list[JobType]:
        return [t for t in self._types.values() if t.retention]


async def noop(ctx: JobContext) -> dict[str, Any]:
    """``noop``: holds the run for ``params.sleep_s`` seconds (default 0), then
    succeeds; for trying out schedules, overlap and the run history."""
    sleep_s = ctx.params.get("sleep_s", 0)
    if isinstance(sleep_s, bool) or not isinstance(sleep_s, int | float):
        raise JobError("invalid_params", "params.sleep_s must be a number of seconds")
    if not 0 <= sleep_s <= MAX_NOOP_SLEEP_S:
        raise JobError("invalid_params", f"params.sleep_s must be 0..{MAX_NOOP_SLEEP_S:g}")
    if sleep_s:
        await asyncio.sleep(sleep_s)
    return {"slept_s": sleep_s}


def default_job_types() -> JobTypes:
    from herald.workers.maintenance import retention

    types = JobTypes()
    types.job("noop")(noop)
    retention.register(types)
    return types

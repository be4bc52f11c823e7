"""Readiness: named deep checks, run concurrently, each bounded by its own timeout.

``ReadinessRegistry.run(state)`` never raises and never outlasts the slowest
check's timeout: a check that raises or hangs reports ``fail`` with the reason.
Each result is ``{status: ok|stale|fail|skipped, detail, observed, unit, time}``,
where ``time`` is when the check finished and ``observed`` what it measured.
The verdict: a *critical* check failing is ``not_ready`` (HTTP 503: take this
process out of the load balancer); any other check failing or stale, or a
critical one stale, is ``degraded`` (200: it serves, someone should look);
otherwise ``ready``.  ``skipped`` (nothing to check here) counts as fine.

Each check observes the dependency *now*, never a remembered "last attempt"
(a probe that reported the time of its last try would call a dead printer
healthy).  Concurrent probes share one run instead of multiplying the load.

Later features add their own checks with ``state.readiness.add(Check(...))``;
the route does not change.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from herald.api.logs import redact
from herald.journal.envelope import format_time
from herald.journal.maintenance.events import scheduler_passes
from herald.journal.tasks.keys import WORKERS_KEY

if TYPE_CHECKING:
    from herald.api.state import AppState

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "WORKERS_KEY",
    "Check",
    "CheckResult",
    "ReadinessRegistry",
    "Report",
    "default_registry",
]

Status = Literal["ok", "stale", "fail", "skipped"]
Verdict = Literal["ready", "degraded", "not_ready"]

# Every check ends within this, so the probe answers within Kubernetes' default
# 1 s probe timeout even when a dependency hangs.
DEFAULT_TIMEOUT_S = 0.8
# Share of HERALD_MAX_CONNECTIONS at which the SSE check turns "stale".
SSE_WARN_SHARE = 0.9
# A writer whose flushes have failed this long is stuck, not retrying a blip: its
# process keeps publishing message events it cannot store.
WRITER_STUCK_S = 30.0


@dataclass(frozen=True, slots=True)
class CheckResult:
    status: Status
    detail: str = ""
    observed: float | int | str | None = None
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class Check:
    """``fn(state)`` observes one dependency; ``critical`` ones decide 503."""

    name: str
    critical: bool
    fn: Callable[[AppState], Awaitable[CheckResult]]
    timeout_s: float = DEFAULT_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class Report:
    verdict: Verdict
    results: list[tuple[Check, CheckResult, datetime]]

    @property
    def http_status(self) -> int:
        return 503 if self.verdict == "not_ready" else 200

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.verdict,
            "checks": {
                check.name: {
                    "status": r.status,
                    "critical": check.critical,
                    "detail": r.detail,
                    "observed": r.observed,
                    "unit": r.unit,
                    "time": format_time(at),
                }
                for check, r, at in self.results
            },
        }


def verdict(results: Iterable[tuple[Check, CheckResult]]) -> Verdict:
    worst: Verdict = "ready"
    for check, r in results:
        if r.status == "fail" and check.critical:
            return "not_ready"
        if r.status in ("fail", "stale"):
            worst = "degraded"
    return worst


class ReadinessRegistry:
    """The checks one process runs for ``GET /readiness``, in registration order."""

    def __init__(self, checks: Iterable[Check] = ()) -> None:
        self._checks: dict[str, Check] = {}
        self._running: asyncio.Task[Report] | None = None
        for check in checks:
            self.add(check)

    def add(self, check: Check) -> None:
        if check.name in self._checks:
            raise ValueError(f"a readiness check named {check.name!r} is already registered")
        self._checks[check.name] = check

    @property
    def checks(self) -> list[Check]:
        return list(self._checks.values())

    async def run(self, state: AppState) -> Report:
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._run(state), name="herald-readiness")
        # Shielded: a probe that disconnects must not cancel the run others await.
        return await asyncio.shield(self._running)

    async def _run(self, state: AppState) -> Report:
        checks = self.checks
        outcomes = await asyncio.gather(*(_observe(c, state) for c in checks))
        results = [(c, r, at) for c, (r, at) in zip(checks, outcomes, strict=True)]
        return Report(verdict((c, r) for c, r, _ in results), results)


async def _observe(check: Check, state: AppState) -> tuple[CheckResult, datetime]:
    try:
        async with asyncio.timeout(check.timeout_s):
            result = await check.fn(state)
    except TimeoutError:
        result = CheckResult("fail", f"no answer within {check.timeout_s:g} s")
    except Exception as e:
        result = CheckResult("fail", _reason(e))
    return result, datetime.now(UTC)


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    first = text.splitlines()[0] if text else ""
    return redact(f"{type(exc).__name__}: {first}"[:300])


def _ms_since(began: float) -> float:
    return round((time.perf_counter() - began) * 1000, 2)


# -- the checks every process has -------------------------------------------------


async def check_database(state: AppState) -> CheckResult:
    if state.engine is None:
        return CheckResult("skipped", "no database configured")
    from sqlalchemy import text

    began = time.perf_counter()
    async with state.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return CheckResult("ok", "SELECT 1 answered", _ms_since(began), "ms")


@functools.cache
def _head_revision() -> str:
    from herald import migrations

    return migrations.head_revision()


async def check_alembic(state: AppState) -> CheckResult:
    if state.engine is None:
        return CheckResult("skipped", "no database configured")
    from alembic.runtime.migration import MigrationContext

    expected = await asyncio.to_thread(_head_revision)  # reads the scripts once
    async with state.engine.connect() as conn:
        found = await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
    if found == expected:
        return CheckResult("ok", f"database at head {expected}", found, "revision")
    return CheckResult(
        "fail",
        f"database is at revision {found or 'none (never migrated)'}, expected {expected}; "
        "run `herald migrate`",
        found,
        "revision",
    )


async def check_redis(state: AppState) -> CheckResult:
    if state.redis is None:
        return CheckResult("skipped", "in-process journal (memory://), no Redis")
    began = time.perf_counter()
    await state.redis.ping()
    return CheckResult("ok", "PING answered", _ms_since(began), "ms")


async def check_hub(state: AppState) -> CheckResult:
    reconnects = state.hub.reconnects
    if state.hub.connected:
        return CheckResult("ok", "pub/sub connection subscribed", reconnects, "reconnects")
    return CheckResult(
        "fail", "pub/sub connection down: live delivery paused", reconnects, "reconnects"
    )


async def check_writer(state: AppState) -> CheckResult:
    writer = getattr(state, "writer", None)
    if writer is None:
        return CheckResult("skipped", "no message writer in this process")
    backlog, limit = int(writer.backlog), int(writer.limit)
    detail = f"{backlog} of at most {limit} events buffered, not yet written"
    if backlog >= limit:
        return CheckResult("fail", detail + "; new events are refused", backlog, "events")
    # Its last flush failed: what counts is the last success, not a small backlog.
    failing = bool(getattr(writer, "failing", False))
    stuck_s = float(getattr(writer, "failing_for_s", 0.0))
    if failing and stuck_s >= WRITER_STUCK_S:
        return CheckResult(
            "fail",
            detail + f"; stuck: no flush has succeeded for {stuck_s:.0f} s",
            backlog,
            "events",
        )
    if failing:
        detail += "; the last flush failed, retrying"
    status: Status = "stale" if failing or backlog > limit / 2 else "ok"
    return CheckResult(status, detail, backlog, "events")


async def check_workers(state: AppState) -> CheckResult:
    if state.redis is None:
        return CheckResult("skipped", "in-process journal (memory://), no worker registry")
    beats = await state.redis.hgetall(WORKERS_KEY)
    stamps = [int(v) for v in beats.values() if v.isdigit()]
    if not stamps:
        return CheckResult("fail", "no worker has ever sent a heartbeat")
    stale_s = state.settings.worker_stale_s
    now_ms = time.time() * 1000
    ages = [max(0.0, (now_ms - ms) / 1000) for ms in stamps]
    fresh = sum(age <= stale_s for age in ages)
    newest = round(min(ages), 3)
    if fresh:
        return CheckResult(
            "ok", f"{fresh} of {len(ages)} workers seen within {stale_s:g} s", newest, "s"
        )
    return CheckResult(
        "stale", f"no heartbeat within {stale_s:g} s; newest is {newest:.0f} s old", newest, "s"
    )


async def check_scheduler(state: AppState) -> CheckResult:
    """A maintenance scheduler (any process) finished a pass within
    HERALD_SCHEDULER_STALE_S: scheduled jobs are being run."""
    if state.redis is None or state.engine is None:
        return CheckResult("skipped", "no scheduler without Redis and PostgreSQL")
    stamps = list((await scheduler_passes(state.redis)).values())
    if not stamps:
        return CheckResult("fail", "no maintenance scheduler has ever run a pass")
    stale_s = state.settings.scheduler_stale_s
    newest = round(max(0.0, (time.time() * 1000 - max(stamps)) / 1000), 3)
    if newest <= stale_s:
        return CheckResult("ok", f"a scheduler ran a pass {newest:.0f} s ago", newest, "s")
    return CheckResult(
        "stale",
        f"no scheduler pass within {stale_s:g} s; newest is {newest:.0f} s old",
        newest,
        "s",
    )


async def check_sse(state: AppState) -> CheckResult:
    open_, cap = state.open_streams, state.settings.max_connections
    detail = f"{open_} of at most {cap} event streams open in this process"
    if open_ >= cap:
        return CheckResult("fail", detail + "; new streams are refused", open_, "connections")
    status: Status = "stale" if open_ >= SSE_WARN_SHARE * cap else "ok"
    return CheckResult(status, detail, open_, "connections")


def default_registry() -> ReadinessRegistry:
    return ReadinessRegistry(
        [
            Check("database", True, check_database),
            Check("alembic", True, check_alembic),
            Check("redis", True, check_redis),
            Check("hub", False, check_hub),
            # Critical: a stuck or full writer means this process loses message events.
            Check("writer", True, check_writer),
            Check("workers", False, check_workers),
            Check("scheduler", False, check_scheduler),
            Check("sse_connections", False, check_sse),
        ]
    )

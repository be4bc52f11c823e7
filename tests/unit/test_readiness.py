"""The readiness registry and the built-in checks, without services.

The registry's rules: verdict from critical/non-critical results, a hung or
failing check reports ``fail`` within its timeout, checks run concurrently,
concurrent probes share one run.  The built-in checks read the state they are
given (memory state; fakeredis for the worker registry).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import fakeredis
import httpx
import pytest

from herald.api.app import create_app
from herald.api.auth import Authenticator
from herald.api.readiness import (
    WORKERS_KEY,
    Check,
    CheckResult,
    ReadinessRegistry,
    check_sse,
    check_workers,
    check_writer,
    verdict,
)
from herald.api.state import AppState, memory_state
from herald.journal.runtime.settings import Settings

RFC3339_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def _state(**settings: Any) -> AppState:
    s = Settings.load(redis_url="memory://", jwt_secret="k" * 40, **settings)
    return memory_state(s, Authenticator(s))


def _const(status: str, detail: str = "") -> Any:
    async def fn(_: AppState) -> CheckResult:
        return CheckResult(status, detail)  # type: ignore[arg-type]

    return fn


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ([], "ready"),
        ([(True, "ok"), (False, "ok"), (False, "skipped")], "ready"),
        ([(True, "skipped"), (False, "skipped")], "ready"),
        ([(True, "ok"), (False, "stale")], "degraded"),
        ([(True, "ok"), (False, "fail")], "degraded"),
        ([(True, "stale"), (False, "ok")], "degraded"),
        ([(True, "fail"), (False, "ok")], "not_ready"),
        ([(False, "fail"), (True, "fail")], "not_ready"),
    ],
)
def test_verdict(results: list[tuple[bool, str]], expected: str) -> None:
    pairs = [
        (Check(f"c{i}", critical, _const(status)), CheckResult(status))  # type: ignore[arg-type]
        for i, (critical, status) in enumerate(results)
    ]
    assert verdict(pairs) == expected


async def test_hung_and_failing_checks_report_fail_within_their_timeout() -> None:
    never = asyncio.Event()

    async def hangs(_: AppState) -> CheckResult:
        await never.wait()
        return CheckResult("ok")

    async def raises(_: AppState) -> CheckResult:
        raise ConnectionError("Error connecting to redis://herald:hunter2@db:6379")

    registry = ReadinessRegistry(
        [
            Check("hangs", False, hangs, timeout_s=0.05),
            Check("raises", True, raises),
            Check("fine", True, _const("ok")),
        ]
    )
    began = time.monotonic()
    report = await registry.run(_state())
    assert time.monotonic() - began < 1.0
    body = report.to_json()
    assert report.verdict == "not_ready" and report.http_status == 503
    assert body["checks"]["hangs"]["status"] == "fail"
    assert body["checks"]["hangs"]["detail"] == "no answer within 0.05 s"
    raised = body["checks"]["raises"]
    assert raised["status"] == "fail" and raised["critical"] is True
    assert raised["detail"].startswith("ConnectionError: Error connecting")
    assert "hunter2" not in raised["detail"]
    assert body["checks"]["fine"]["status"] == "ok"
    assert all(RFC3339_Z.fullmatch(c["time"]) for c in body["checks"].values())


async def test_checks_run_concurrently() -> None:
    # Each check waits for the other: run one after the other, neither finishes.
    both = asyncio.Barrier(2)

    async def meet(_: AppState) -> CheckResult:
        await both.wait()
        return CheckResult("ok")

    registry = ReadinessRegistry([Check("a", True, meet, 1.0), Check("b", True, meet, 1.0)])
    report = await registry.run(_state())
    assert report.verdict == "ready"


async def test_concurrent_probes_share_one_run() -> None:
    calls = 0
    go = asyncio.Event()

    async def counted(_: AppState) -> CheckResult:
        nonlocal calls
        calls += 1
        await go.wait()
        return CheckResult("ok")

    registry = ReadinessRegistry([Check("counted", True, counted)])
    state = _state()
    probes = [asyncio.create_task(registry.run(state)) for _ in range(5)]
    await asyncio.wait(probes, timeout=0.01)
    go.set()
    reports = await asyncio.gather(*probes)
    assert calls == 1 and len({id(r) for r in reports}) == 1
    await registry.run(state)  # a later probe observes again
    assert calls == 2


def test_names_are_unique() -> None:
    registry = ReadinessRegistry([Check("db", True, _const("ok"))])
    with pytest.raises(ValueError, match="already registered"):
        registry.add(Check("db", False, _const("ok")))


@dataclass
class Buffer:
    """What the writer check reads from ``state.writer``."""

    backlog: int
    limit: int
    failing: bool = False


@pytest.mark.parametrize(
    ("backlog", "status"), [(0, "ok"), (50, "ok"), (51, "stale"), (99, "stale"), (100, "fail")]
)
async def test_writer_backlog(backlog: int, status: str) -> None:
    state = replace(_state(), writer=Buffer(backlog, 100))  # type: ignore[arg-type]
    result = await check_writer(state)
    assert (result.status, result.observed, result.unit) == (status, backlog, "events")


async def test_writer_whose_last_flush_failed_is_stale_even_when_nearly_empty() -> None:
    state = replace(_state(), writer=Buffer(1, 100, failing=True))  # type: ignore[arg-type]
    result = await check_writer(state)
    assert result.status == "stale" and "last flush failed" in result.detail


async def test_writer_absent_is_skipped() -> None:
    assert (await check_writer(_state())).status == "skipped"


@pytest.mark.parametrize(
    ("open_streams", "status"), [(0, "ok"), (89, "ok"), (90, "stale"), (100, "fail")]
)
async def test_sse_connections_against_the_process_cap(open_streams: int, status: str) -> None:
    state = _state(max_connections=100)
    state.open_streams = open_streams
    result = await check_sse(state)
    assert (result.status, result.observed) == (status, open_streams)


@pytest.fixture
async def redis_state() -> AsyncIterator[AppState]:
    client = fakeredis.FakeAsyncRedis()
    yield replace(_state(worker_stale_s=30), redis=client)
    await client.aclose()


async def test_workers(redis_state: AppState) -> None:
    client = redis_state.redis
    assert client is not None
    result = await check_workers(redis_state)
    assert result.status == "fail" and "no worker" in result.detail
    now_ms = int(time.time() * 1000)
    await client.hset(WORKERS_KEY, mapping={"w1": now_ms - 60_000, "w2": "garbage"})
    result = await check_workers(redis_state)
    assert result.status == "stale" and result.unit == "s"
    assert isinstance(result.observed, float) and 59 <= result.observed < 70
    await client.hset(WORKERS_KEY, "w3", now_ms - 1_000)
    result = await check_workers(redis_state)
    assert result.status == "ok" and result.detail == "1 of 2 workers seen within 30 s"


async def test_readiness_route_on_memory_state() -> None:
    state = _state()
    app = create_app(state.settings, state=state)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://herald"
    ) as http:
        r = await http.get("/readiness")
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
        body = r.json()
        assert body["status"] == "ready"
        checks = body["checks"]
        assert set(checks) == {
            "database",
            "alembic",
            "redis",
            "hub",
            "writer",
            "workers",
            "scheduler",
            "sse_connections",
            "printer_probe",
        }
        assert {k: v["status"] for k, v in checks.items()} == {
            "database": "skipped",
            "alembic": "skipped",
            "redis": "skipped",
            "hub": "ok",
            "writer": "skipped",
            "workers": "skipped",
            "scheduler": "skipped",
            "sse_connections": "ok",
            "printer_probe": "skipped",  # no database here
        }
        for check in checks.values():
            assert set(check) == {"status", "critical", "detail", "observed", "unit", "time"}

        # A feature adds its own check; the route picks it up unchanged.
        state.readiness.add(Check("backups", False, _const("stale", "last backup 20 h ago")))
        body = (await http.get("/readiness")).json()
        assert body["status"] == "degraded"
        assert body["checks"]["backups"]["detail"] == "last backup 20 h ago"
        state.readiness.add(Check("mail_relay", True, _const("fail", "no answer")))
        r = await http.get("/readiness")
        assert r.status_code == 503 and r.json()["status"] == "not_ready"


async def test_stream_beyond_the_process_cap_is_503() -> None:
    state = _state(max_connections=2)
    state.open_streams = 2
    app = create_app(state.settings, state=state)
    token = state.auth.issue("alice", (), 60)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://herald"
    ) as http:
        r = await http.get("/api/events", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert r.json()["error"] == "server_busy"
        report = (await http.get("/readiness")).json()
        assert report["checks"]["sse_connections"]["status"] == "fail"


@dataclass
class StuckBuffer(Buffer):
    failing_for_s: float = 0.0


async def test_writer_failing_for_longer_than_the_stuck_limit_fails_readiness() -> None:
    from herald.api.readiness import WRITER_STUCK_S, default_registry

    stuck = StuckBuffer(3, 100, failing=True, failing_for_s=WRITER_STUCK_S + 1)
    result = await check_writer(replace(_state(), writer=stuck))  # type: ignore[arg-type]
    assert result.status == "fail" and "stuck" in result.detail
    assert {c.name: c.critical for c in default_registry().checks}["writer"] is True
    blip = StuckBuffer(3, 100, failing=True, failing_for_s=1.0)
    assert (await check_writer(replace(_state(), writer=blip))).status == "stale"  # type: ignore[arg-type]

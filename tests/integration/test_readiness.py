"""Operations endpoints of a real ``herald serve``: readiness flips, metrics, JSON logs.

Each server here gets its own ``redis-server`` (on a free port) and its own
embedded PostgreSQL, so the tests can stop them without disturbing anyone else:

* no worker heartbeat → 200 ``degraded``; a fresh one → ``ready``; an old one →
  ``degraded`` with ``workers: stale``;
* the server's in-process maintenance scheduler records its passes: ``scheduler``
  is ``ok``; with no pass recorded it fails, with only an old one it is ``stale``;
* Redis stopped → the very next ``/readiness`` is 503; ``/healthz`` still answers,
  and keeps answering once PostgreSQL is stopped too (it touches neither);
* the hub's pub/sub connection killed → it reconnects and the counter says so;
* ``/metrics`` counts by route template and type prefix, never by user;
* every log line is one JSON object with the request id; no token in the logs.

Waits are deadline polls that each make a request (no sleeps).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from herald.api.readiness import WORKERS_KEY
from herald.journal.maintenance import SCHEDULERS_KEY
from herald.journal.runtime.embedded import EmbeddedServices
from tests.servers import HeraldProcess, free_port

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 60.0
STALE_S = 30
# One probe may take a check's timeout (2 s) plus the request itself (on a busy machine).
PROBE_BUDGET_S = 5.0
# Well under the 5 s Redis and PostgreSQL connect timeouts a dependency would cost.
LIVENESS_BUDGET_S = 2.5


class OwnRedis:
    """A ``redis-server`` this test starts and stops (by its own process handle)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        self.proc = subprocess.Popen(
            ["redis-server", *args, "no", "--dir", str(self.workdir), "--loglevel", "notice"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # its own "ready" line, not a poll
            if "Ready to accept connections" in line:
                return
        raise AssertionError(f"redis-server exited with {self.proc.wait()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@dataclass
class Stack:
    redis: OwnRedis
    services: EmbeddedServices
    herald: HeraldProcess
    http: httpx.Client


def start_stack(root: Path) -> Stack:
    own_redis = OwnRedis(root)
    own_redis.start()
    services = EmbeddedServices(root / "data")
    herald = HeraldProcess(
        root,
        HERALD_REDIS_URL=own_redis.url,
        HERALD_WORKER_IN_PROCESS="false",
        HERALD_SCHEDULER_IN_PROCESS="true",
        # Its passes then come a minute apart: a test can set the record aside.
        HERALD_SCHEDULER_POLL_S="60",
        HERALD_WORKER_STALE_S=str(STALE_S),
        HERALD_LOG_LEVEL="INFO",
    )
    stack = Stack(own_redis, services, herald, httpx.Client(base_url=herald.url, timeout=10))
    try:
        services.start()
        herald.env["HERALD_DATABASE_URL"] = services.database_url
        herald.start(timeout=START_TIMEOUT_S)
    except BaseException:
        stop_stack(stack)
        raise
    return stack


def stop_stack(stack: Stack) -> None:
    stack.http.close()
    try:
        if stack.herald.proc is not None:
            stack.herald.stop()
    finally:
        stack.redis.stop()
        stack.services.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for the tests that stop nothing."""
    stack = start_stack(tmp_path_factory.mktemp("ops"))
    yield stack
    stop_stack(stack)


@pytest.fixture
def own(tmp_path: Path) -> Iterator[Stack]:
    """A stack for one test that stops its servers."""
    stack = start_stack(tmp_path)
    yield stack
    stop_stack(stack)


def probe(stack: Stack) -> tuple[int, dict[str, Any]]:
    began = time.monotonic()
    r = stack.http.get("/readiness")
    assert time.monotonic() - began < PROBE_BUDGET_S, "a probe must not hang"
    return r.status_code, r.json()


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {name: check["status"] for name, check in report["checks"].items()}


def until(predicate: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"


def heartbeat(stack: Stack, age_s: float) -> None:
    with stack.redis.client() as rc:
        rc.hset(WORKERS_KEY, "w-test", int((time.time() - age_s) * 1000))


def test_worker_heartbeats_flip_ready_and_degraded(shared: Stack) -> None:
    until(lambda: statuses(probe(shared)[1])["scheduler"] == "ok", START_TIMEOUT_S)
    with shared.redis.client() as rc:
        rc.delete(WORKERS_KEY)
    code, report = probe(shared)
    assert (code, report["status"]) == (200, "degraded"), report
    checks = statuses(report)
    # Printers registered by other tests in the shared database make this one vary;
    # it is never critical, so it cannot turn a degraded report into another status.
    assert checks.pop("printer_probe") in {"ok", "stale", "fail", "skipped"}
    assert checks == {
        "database": "ok",
        "alembic": "ok",
        "redis": "ok",
        "hub": "ok",
        "writer": "ok",
        "workers": "fail",
        "scheduler": "ok",
        "sse_connections": "ok",
    }
    assert report["checks"]["database"]["unit"] == "ms"
    assert report["checks"]["alembic"]["detail"].startswith("database at head")

    heartbeat(shared, age_s=1)
    code, report = probe(shared)
    assert (code, report["status"]) == (200, "ready"), report
    assert report["checks"]["workers"]["observed"] < STALE_S

    heartbeat(shared, age_s=2 * STALE_S)
    code, report = probe(shared)
    assert (code, report["status"]) == (200, "degraded"), report
    assert statuses(report)["workers"] == "stale"


def test_the_in_process_scheduler_is_seen_by_readiness(shared: Stack) -> None:
    until(lambda: statuses(probe(shared)[1])["scheduler"] == "ok", START_TIMEOUT_S)
    check = probe(shared)[1]["checks"]["scheduler"]
    assert check["critical"] is False and check["unit"] == "s" and check["observed"] < 120
    with shared.redis.client() as rc:
        rc.delete(SCHEDULERS_KEY)
        assert statuses(probe(shared)[1])["scheduler"] == "fail"
        rc.hset(SCHEDULERS_KEY, "gone", int((time.time() - 3600) * 1000))
        assert statuses(probe(shared)[1])["scheduler"] == "stale"
        rc.hset(SCHEDULERS_KEY, "gone", int(time.time() * 1000))
        assert statuses(probe(shared)[1])["scheduler"] == "ok"


def test_hub_reconnect_is_counted_and_seen_by_readiness(shared: Stack) -> None:
    def reconnects() -> float:
        for line in shared.http.get("/metrics").text.splitlines():
            if line.startswith("herald_hub_reconnects_total "):
                return float(line.split()[1])
        raise AssertionError("no herald_hub_reconnects_total in /metrics")

    before = reconnects()
    with shared.redis.client() as rc:
        rc.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    until(lambda: reconnects() > before)
    until(lambda: statuses(probe(shared)[1])["hub"] == "ok")


def test_metrics_and_json_logs(shared: Stack, unique: str) -> None:
    user = f"ops-{unique}"
    token = shared.herald.token(user, "admin")
    request_id = f"it-{unique}"
    published = shared.http.post(
        "/api/publish",
        json={"user": user, "type": "itest.ops.done", "data": {"ok": True}},
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": request_id},
    )
    assert published.status_code == 201 and published.headers["x-request-id"] == request_id
    page = shared.http.get(
        "/api/events/history", params={"token": token}, headers={"X-Request-ID": request_id}
    )
    assert page.status_code == 200 and len(page.json()["events"]) == 1

    text = shared.http.get("/metrics").text
    # A prefix Herald does not know counts as "other": publishers cannot add labels.
    assert 'herald_envelopes_published_total{type_prefix="other"}' in text
    assert 'type_prefix="itest"' not in text
    assert 'route="/api/events/history"' in text
    assert user not in text and request_id not in text

    def access_lines() -> list[dict[str, Any]]:
        shared.http.get("/healthz")  # each poll is a request, and logs one more line
        lines = [orjson.loads(x) for x in shared.herald.log if x.startswith("{")]
        return [x for x in lines if x["request_id"] == request_id and x.get("path")]

    until(lambda: len(access_lines()) == 2)
    history_line = next(x for x in access_lines() if x["path"].startswith("/api/events/history"))
    assert history_line["logger"] == "uvicorn.access" and history_line["status"] == 200
    assert history_line["path"] == "/api/events/history?token=[redacted]"
    output = "".join(shared.herald.log)
    assert token not in output
    for line in shared.herald.log:
        if line.startswith("herald:"):
            continue  # the command's own status lines on stdout
        parsed = orjson.loads(line)
        assert {"time", "level", "logger", "event", "request_id"} <= set(parsed), line


def test_redis_then_postgres_down(own: Stack) -> None:
    stack = own
    until(lambda: statuses(probe(stack)[1])["scheduler"] == "ok", START_TIMEOUT_S)
    heartbeat(stack, age_s=0)
    code, report = probe(stack)
    assert (code, report["status"]) == (200, "ready"), report

    stack.redis.stop()
    code, report = probe(stack)  # the first probe after the stop already knows
    assert (code, report["status"]) == (503, "not_ready"), report
    assert statuses(report)["redis"] == "fail" and statuses(report)["database"] == "ok"
    assert report["checks"]["redis"]["critical"] is True
    health = stack.http.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"

    stack.services.stop()  # PostgreSQL too: liveness still answers, at once
    began = time.monotonic()
    health = stack.http.get("/healthz")
    assert health.status_code == 200 and time.monotonic() - began < LIVENESS_BUDGET_S
    assert health.json()["uptime_s"] > 0
    code, report = probe(stack)
    assert code == 503
    assert {statuses(report)[k] for k in ("database", "alembic", "redis")} == {"fail"}

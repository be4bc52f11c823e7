"""Printer status end to end, against a real snmpsim agent on loopback:

* ``herald serve`` (probe in-process) and an SSE subscriber of the ``printers``
  topic: each transition — online idle, printing, cover open + no paper, media
  changed, agent stopped, agent back with a lower sysUpTime — is exactly one
  ``printer.status`` event; the status endpoint keeps the last snapshot while
  offline, and readiness goes ``stale`` then ``fail`` on the success age while the
  attempts stay fresh.
* Two ``herald worker`` processes and 20 printers: each printer is probed once per
  interval by one process; SIGKILL one and the other probes its printers within
  one interval.  Probes are counted at the agent (its log names the community and
  the source port, i.e. the probing process).

Waits are on the SSE stream, on the agent's log or deadline polls that each make a
request; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete

from herald.journal.printers import store
from herald.journal.printers.spec import PrinterSpec
from herald.journal.runtime.db import make_engine, run_in_transaction
from herald.journal.runtime.settings import Settings
from herald.journal.tables import printers
from tests.conftest import DATABASE_URL, REDIS_URL
from tests.servers import HeraldProcess
from tests.snmp_agent import SnmpAgent, warm_up
from tests.sseclient import SseStream, open_sse

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HERALD = str(Path(sys.executable).with_name("herald"))
DEADLINE_S = 45.0
INTERVAL_S = 2.0
FRESH_S, STALE_S = 5.0, 9.0


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[SnmpAgent]:
    found = SnmpAgent(tmp_path)
    yield found
    found.close()


async def _forget(port: int) -> None:
    engine = make_engine(Settings.load(database_url=DATABASE_URL, redis_url="memory://"))
    try:

        async def work(conn: Any) -> None:
            await conn.execute(delete(printers).where(printers.c.port == port))

        await run_in_transaction(engine, work)
    finally:
        await engine.dispose()


async def _next_status(stream: SseStream, printer_id: str) -> dict[str, Any]:
    """The next ``printer.status`` of this printer (other tests' printers share the topic)."""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            envelope = (await stream.next_event()).json()
            if (
                envelope["type"] == "printer.status"
                and envelope["data"]["printer_id"] == printer_id
            ):
                assert envelope["source"] == "/workers/printers/topics/printers"
                return dict(envelope["data"])


async def _poll(http: httpx.AsyncClient, path: str, ok: Any, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        body = (await http.get(path)).json()
        if ok(body):
            return dict(body)
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {body}"


async def test_each_transition_is_exactly_one_event_on_the_printers_topic(
    tmp_path: Path, agent: SnmpAgent, unique: str
) -> None:
    agent.load(unique, "idle")
    agent.start()
    await warm_up(agent, unique)
    server = HeraldProcess(
        tmp_path,
        HERALD_WORKER_IN_PROCESS="true",
        HERALD_PRINTER_PROBE_INTERVAL_S=str(INTERVAL_S),
        HERALD_PRINTER_PROBE_TIMEOUT_S="1.5",
        HERALD_PRINTER_FRESH_S=str(FRESH_S),
        HERALD_PRINTER_STALE_S=str(STALE_S),
        HERALD_TOPICS='{"printers": ["*"]}',
    )
    body = {
        "name": "Label printer",
        "model": "PT-P750W",
        "host": "127.0.0.1",
        "port": agent.port,
        "community": unique,
    }
    with server:
        admin = {"Authorization": f"Bearer {server.token('root', 'admin')}"}
        user = server.token(unique)  # no role: HERALD_TOPICS lets anyone read "printers"
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=30) as sse_http,
            httpx.AsyncClient(
                base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {user}"}
            ) as http,
            open_sse(sse_http, "/api/events", user, params={"topic": "printers"}) as stream,
        ):
            pid = None
            try:
                r = await http.post("/api/printers", json=body, headers=admin)
                assert r.status_code == 201, r.text
                pid = r.json()["id"]
                status_path = f"/api/printers/{pid}/status"

                first = await _next_status(stream, pid)
                assert first["online"] is True and first["state"] == "idle"
                assert first["device_status"] == "running" and first["errors"] == []
                assert first["media"]["name"] == "12mm TZe" and first["media"]["width_mm"] == 12.0
                assert "rebooted" not in first

                agent.load(unique, "printing")
                printing = await _next_status(stream, pid)
                assert (printing["online"], printing["state"]) == (True, "printing")

                agent.load(unique, "cover_open_no_paper")
                cover = await _next_status(stream, pid)
                assert cover["errors"] == [
                    "noPaper",
                    "doorOpen",
                    "outputNearFull",
                    "inputTrayEmpty",
                ]
                assert (cover["state"], cover["device_status"]) == ("other", "down")

                agent.load(unique, "media_changed")
                media = await _next_status(stream, pid)
                assert media["errors"] == [] and media["state"] == "idle"
                assert media["media"]["name"] == "24mm TZe" and media["media"]["width_mm"] == 24.0
                online = (await http.get(status_path)).json()
                assert online["online"] is True and online["uptime_s"] == 86430.0
                assert online["supplies"][1] == {
                    "description": "Battery",
                    "level": 80,
                    "max": 100,
                    "percent": 80,
                    "level_state": "known",
                    "max_state": "known",
                }

                agent.stop()
                offline = await _next_status(stream, pid)
                assert offline["online"] is False and "no SNMP answer" in offline["last_error"]
                assert offline["last_success_at"] == media["captured_at"]
                assert offline["media"] == media["media"]  # the last snapshot, kept

                status = (await http.get(status_path)).json()
                assert status["online"] is False and status["media"]["name"] == "24mm TZe"
                assert status["last_success_at"] == media["captured_at"]
                # Stale on the success age while the attempts are fresh, then fail.
                stale = await _poll(
                    http,
                    "/readiness",
                    lambda b: b["checks"]["printer_probe"]["status"] != "ok",
                    "printer_probe to go stale",
                )
                assert stale["checks"]["printer_probe"]["status"] == "stale", stale
                assert stale["status"] == "degraded"
                status = (await http.get(status_path)).json()
                assert status["last_probe_age_s"] < FRESH_S < status["last_success_age_s"]
                failed = await _poll(
                    http,
                    "/readiness",
                    lambda b: b["checks"]["printer_probe"]["status"] == "fail",
                    "printer_probe to fail",
                )
                assert failed["status"] == "degraded"  # not critical: still serving

                agent.load(unique, "rebooted")  # a much lower sysUpTime
                agent.start()
                back = await _next_status(stream, pid)
                assert back["online"] is True and back["rebooted"] is True
                assert back["media"]["name"] == "24mm TZe"

                # Several more probes of an unchanged printer publish nothing.
                seen = back["captured_at"]
                for _ in range(3):
                    later = await _poll(
                        http, status_path, lambda b, s=seen: b["captured_at"] > s, "a later probe"
                    )
                    seen = later["captured_at"]
                history = (
                    await http.get(
                        "/api/events/history", params={"topic": "printers", "limit": 1000}
                    )
                ).json()["events"]
                mine = [
                    e["data"]
                    for e in history
                    if e["type"] == "printer.status" and e["data"]["printer_id"] == pid
                ]
                assert [(e["online"], e.get("rebooted", False)) for e in mine] == [
                    (True, False),
                    (True, False),
                    (True, False),
                    (True, False),
                    (False, False),
                    (True, True),
                ]
                assert [e["captured_at"] for e in mine] == [
                    e["captured_at"] for e in (first, printing, cover, media, offline, back)
                ]
            finally:
                if pid is not None:
                    await http.delete(f"/api/printers/{pid}", headers=admin)
    await _forget(agent.port)


class WorkerProcess:
    """A real ``herald worker`` probing printers (its task queue is unused)."""

    def __init__(self, queue: str, **env: str) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        environ.update(
            {
                "HERALD_REDIS_URL": REDIS_URL,
                "HERALD_DATABASE_URL": DATABASE_URL,
                "HERALD_LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
                **env,
            }
        )
        self.proc = subprocess.Popen(
            [HERALD, "worker", "--queue", queue],
            cwd=ROOT,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_line(self, prefix: str) -> str:
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((x for x in self.lines if x.startswith(prefix)), None), DEADLINE_S
            )
        assert found, f"no line {prefix!r} from the worker:\n{''.join(self.lines)}"
        return found

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._pump.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def _workers(n: int, queue: str, **env: str) -> Iterator[list[WorkerProcess]]:
    started = [WorkerProcess(queue, **env) for _ in range(n)]
    try:
        yield started
    finally:
        for w in started:
            w.close()


PRINTERS = 20
SHARED_INTERVAL_S = 8.0  # snmpsim answers a handful of probes a second on a busy machine


async def test_two_workers_share_twenty_printers_and_take_over_a_killed_ones(
    agent: SnmpAgent, unique: str
) -> None:
    communities = [f"{unique}-{i:02d}" for i in range(PRINTERS)]
    for community in communities:
        agent.load(community, "idle")
    agent.start()
    await warm_up(agent, communities[0])
    engine = make_engine(Settings.load(database_url=DATABASE_URL, redis_url="memory://"))
    # One endpoint serves every agent (by community), so the printers differ by model:
    # model, host and port are a printer's identity.
    specs = [
        PrinterSpec(name=c, model=f"PT-P750W-{i}", host="127.0.0.1", port=agent.port, community=c)
        for i, c in enumerate(communities)
    ]
    assert len({spec.id for spec in specs}) == PRINTERS
    await run_in_transaction(engine, lambda conn: _register(conn, specs))
    env = {
        "HERALD_PRINTER_PROBE_INTERVAL_S": str(SHARED_INTERVAL_S),
        "HERALD_PRINTER_PROBE_TIMEOUT_S": "6",
    }
    try:
        with _workers(2, unique, **env) as (first, second):
            await asyncio.to_thread(first.wait_line, "herald: printer probe ")
            await asyncio.to_thread(second.wait_line, "herald: printer probe ")
            # Three full intervals with both workers, and until both have probed: which
            # one wins each printer's claim is a race, fair but not fixed in advance.
            began = time.monotonic()

            def shared(probes: list) -> bool:
                mine = [p for p in probes if p.community in communities and p.at > began]
                return (
                    time.monotonic() - began > 3 * SHARED_INTERVAL_S + 1
                    and len({p.source_port for p in mine}) == 2
                )

            await asyncio.to_thread(agent.wait_probes, shared, 7 * SHARED_INTERVAL_S)
            # The agent logs a request when it gets to it: under load its queue adds
            # seconds of jitter, hence the wide bounds below.
            both = [p for p in agent.probes() if p.community in communities and p.at > began]
            per_printer = {c: [p for p in both if p.community == c] for c in communities}
            for community, probes in per_printer.items():
                gaps = [b.at - a.at for a, b in itertools.pairwise(probes)]
                assert len(probes) >= 3, (community, len(probes))
                # Once per interval, never twice in one (by any process), none skipped.
                assert all(0.5 * SHARED_INTERVAL_S < g < 2 * SHARED_INTERVAL_S for g in gaps), (
                    community,
                    gaps,
                )
            sources = {p.source_port for p in both}
            assert len(sources) == 2, "both workers probe"

            # SIGKILL one: no goodbye, its claims simply run out.
            last_before = {c: per_printer[c][-1].at for c in communities}
            killed_at = time.monotonic()
            first.proc.kill()
            # Until every printer was probed well after the dead worker's claims have all
            # run out (an interval after the kill), and after the agent has logged
            # what that worker sent before it died (its queue lags up to about half an
            # interval here): the takeovers alone can all come within the interval,
            # and would leave nothing to check below.
            late_enough = killed_at + 1.5 * SHARED_INTERVAL_S
            await asyncio.to_thread(
                agent.wait_probes,
                lambda probes: all(
                    any(p.community == c and p.at > late_enough for p in probes)
                    for c in communities
                ),
                6 * SHARED_INTERVAL_S,
            )
            after = [p for p in agent.probes() if p.community in communities]
            for community in communities:
                taken = min(p.at for p in after if p.community == community and p.at > killed_at)
                # Probed again once the dead worker's claim ran out (one interval after
                # its last probe), by the survivor.  The agent's clock is when it got to
                # a request: its queue on a loaded machine adds up to an interval to
                # either end, so the bound is three intervals, not the eight a missed
                # takeover would leave it at.
                gap = taken - last_before[community]
                assert gap < 3 * SHARED_INTERVAL_S, (community, gap)
            # Then every probe comes from the survivor.
            late = {p.source_port for p in after if p.at > late_enough}
            assert len(late) == 1 and late <= sources
            assert first.proc.poll() is not None and second.proc.poll() is None
    finally:
        await run_in_transaction(
            engine, lambda conn: conn.execute(delete(printers).where(printers.c.port == agent.port))
        )
        await engine.dispose()


async def _register(conn: Any, specs: list[PrinterSpec]) -> None:
    for spec in specs:
        await store.upsert_printer(conn, spec)


def test_snmprec_files_are_sorted_by_oid() -> None:
    # snmpsim binary-searches its index: an unsorted file answers wrongly.
    for path in (ROOT / "tests" / "data" / "printers").glob("*.snmprec"):
        oids = [line.split("|", 1)[0] for line in path.read_text().splitlines() if line]
        keys = [tuple(int(x) for x in oid.split(".")) for oid in oids]
        assert keys and keys == sorted(keys), path.name

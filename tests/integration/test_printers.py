"""Printers against real PostgreSQL, Redis and a real SNMP agent (snmpsim) on loopback.

* The routes: registering the same (model, host, port) again is a 200 with the
  same id; reads follow the ``printers`` topic's roles; PATCH refuses identity
  fields; DELETE removes the status too; the status before the first probe.
* ``HERALD_PRINTERS`` is upserted when the app starts.
* The probe in-process: a failure keeps the last snapshot and its time, a cache
  write that fails once is logged and counted and the loop goes on.
* The schema matches the tables (no drift for ``alembic check``).

Every test deletes the printers it made (they share one database); waits poll the
cache under a deadline, never sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from prometheus_client import REGISTRY
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from herald import migrations
from herald.api.app import create_app
from herald.api.auth import Authenticator
from herald.api.printer_status import check_printer_probe
from herald.api.state import AppState, open_state
from herald.journal.printers import store
from herald.journal.printers.spec import PrinterSpec, printer_id
from herald.journal.runtime.db import run_in_transaction
from herald.journal.runtime.settings import Settings
from herald.journal.tables import printers
from herald.workers.printers import PrinterProbe, probe
from tests.conftest import DATABASE_URL, REDIS_URL
from tests.snmp_agent import SnmpAgent, free_udp_port, warm_up

pytestmark = pytest.mark.integration

SECRET = "printers-secret-printers-secret-0123456789"
DEADLINE_S = 30.0


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[SnmpAgent]:
    found = SnmpAgent(tmp_path)
    yield found
    found.close()


async def _forget(engine: AsyncEngine, port: int) -> None:
    async def work(conn: Any) -> None:
        await conn.execute(delete(printers).where(printers.c.port == port))

    await run_in_transaction(engine, work)


@dataclass
class Api:
    http: httpx.AsyncClient
    state: AppState
    auth: Authenticator

    def as_(self, user: str, *roles: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.auth.issue(user, roles)}"}

    @property
    def admin(self) -> dict[str, str]:
        return self.as_("root", "admin")


@contextlib.asynccontextmanager
async def _api(**overrides: Any) -> AsyncIterator[Api]:
    settings = Settings.load(
        redis_url=REDIS_URL,
        database_url=DATABASE_URL,
        jwt_secret=SECRET,
        topics={"printers": ["viewer"]},
        **overrides,
    )
    auth = Authenticator(settings)
    async with open_state(settings, auth) as state:
        app = create_app(settings, auth=auth, state=state)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://herald") as http:
            yield Api(http, state, auth)


@pytest.fixture
async def api(migrated_database: str) -> AsyncIterator[Api]:
    async with _api() as found:
        yield found


async def test_registering_the_same_printer_again_keeps_its_id(api: Api, unique: str) -> None:
    port = free_udp_port()  # nothing listens: the printer's own port, unique to this test
    body = {"name": "Front desk", "model": "PT-P750W", "host": "127.0.0.1", "port": port}
    try:
        first = await api.http.post("/api/printers", json=body, headers=api.admin)
        assert first.status_code == 201, first.text
        printer = first.json()
        assert printer["community"] == "public" and printer["port"] == port
        again = {**body, "name": "Back office", "model": "pt-p750w", "community": "s3cret"}
        second = await api.http.post("/api/printers", json=again, headers=api.admin)
        assert second.status_code == 200, second.text
        assert second.json()["id"] == printer["id"]
        assert (second.json()["name"], second.json()["community"]) == ("Back office", "s3cret")
        assert second.json()["model"] == "PT-P750W"  # the first spelling stays
        assert printer["id"] == str(printer_id("PT-P750W", "127.0.0.1", port))

        # Reads: admins, and the roles HERALD_TOPICS lets read "printers".
        viewer = api.as_("v", "viewer")
        listed = await api.http.get("/api/printers", headers=viewer)
        assert listed.status_code == 200
        mine = [p for p in listed.json()["printers"] if p["id"] == printer["id"]]
        assert mine and mine[0]["community"] is None  # a credential: admins only
        outsider = await api.http.get(f"/api/printers/{printer['id']}", headers=api.as_("o"))
        assert (outsider.status_code, outsider.json()["error"]) == (403, "topic_forbidden")
        refused = await api.http.post("/api/printers", json=body, headers=viewer)
        assert (refused.status_code, refused.json()["error"]) == (403, "role_missing")

        status = await api.http.get(f"/api/printers/{printer['id']}/status", headers=viewer)
        assert status.status_code == 200
        assert status.json()["online"] is None and status.json()["note"] == "not probed yet"
        assert status.json()["captured_at"] is None and status.json()["errors"] == []

        moved = await api.http.patch(
            f"/api/printers/{printer['id']}", json={"host": "127.0.0.9"}, headers=api.admin
        )
        assert (moved.status_code, moved.json()["error"]) == (422, "printer_identity_immutable")
        renamed = await api.http.patch(
            f"/api/printers/{printer['id']}", json={"name": " Lobby "}, headers=api.admin
        )
        assert renamed.status_code == 200 and renamed.json()["name"] == "Lobby"
        blank = await api.http.patch(
            f"/api/printers/{printer['id']}", json={"name": "  "}, headers=api.admin
        )
        assert (blank.status_code, blank.json()["error"]) == (422, "invalid_body")

        gone = await api.http.delete(f"/api/printers/{printer['id']}", headers=api.admin)
        assert gone.status_code == 204
        for path in (f"/api/printers/{printer['id']}", "/api/printers/not-a-uuid/status"):
            missing = await api.http.get(path, headers=api.admin)
            assert (missing.status_code, missing.json()["error"]) == (404, "printer_not_found")
        bad = await api.http.post("/api/printers", json={**body, "port": 0}, headers=api.admin)
        assert (bad.status_code, bad.json()["error"]) == (422, "invalid_body")
    finally:
        assert api.state.engine is not None
        await _forget(api.state.engine, port)


async def test_herald_printers_are_registered_at_startup(migrated_database: str) -> None:
    spec = PrinterSpec(name="Configured", model="QL-820NWB", host="127.0.0.1", port=1)
    async with _api(printers=[spec]) as api:
        assert api.state.engine is not None
        try:
            r = await api.http.get(f"/api/printers/{spec.id}", headers=api.admin)
            assert r.status_code == 200 and r.json()["name"] == "Configured"
        finally:
            await _forget(api.state.engine, 1)


def _settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "redis_url": REDIS_URL,
        "database_url": DATABASE_URL,
        "printer_probe_interval_s": 0.5,
        "printer_probe_timeout_s": 0.4,
    }
    return Settings.load(**{**base, **overrides})


class ObservedProbe(PrinterProbe):
    """The probe, counting finished probes so a test can wait for the next ones."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.finished = 0
        self._changed = asyncio.Condition()

    async def _probe(self, snmp: Any, printer: store.Printer) -> None:
        await super()._probe(snmp, printer)
        async with self._changed:
            self.finished += 1
            self._changed.notify_all()

    async def after(self, probes: int) -> None:
        """Wait until ``probes`` more probes finished (cache written)."""
        target = self.finished + probes
        async with asyncio.timeout(DEADLINE_S), self._changed:
            await self._changed.wait_for(lambda: self.finished >= target)


def _count(outcome: str) -> float:
    return REGISTRY.get_sample_value("herald_printer_probes_total", {"outcome": outcome}) or 0.0


async def test_offline_keeps_the_snapshot_and_a_failing_write_never_stops_the_loop(
    api: Api, agent: SnmpAgent, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent.load(unique, "idle")
    agent.start()
    await warm_up(agent, unique)
    assert api.state.engine is not None and api.state.redis is not None
    engine = api.state.engine
    spec = PrinterSpec(
        name=unique, model="PT-P750W", host="127.0.0.1", port=agent.port, community=unique
    )
    await run_in_transaction(engine, lambda c: store.upsert_printer(c, spec))

    fail_once = {"left": 1}
    real = store.record_success

    async def flaky(*args: Any) -> Any:
        if fail_once["left"]:
            fail_once["left"] -= 1
            raise RuntimeError("cache write failed")
        return await real(*args)

    monkeypatch.setattr(probe, "record_success", flaky)
    errors_before = _count("error")
    runner = ObservedProbe(
        engine=engine,
        redis=api.state.redis,
        journal=api.state.journal,
        settings=_settings(printer_probe_interval_s=1.0, printer_probe_timeout_s=0.9),
    )
    task = asyncio.create_task(runner.run())

    async def status() -> dict[str, Any]:
        r = await api.http.get(f"/api/printers/{spec.id}/status", headers=api.admin)
        return dict(r.json())

    try:
        await runner.after(2)  # the first probe's write failed; the loop went on
        assert _count("error") == errors_before + 1  # that failure, logged and counted
        online = await status()
        assert online["online"] is True, online
        assert online["state"] == "idle" and online["media"]["name"] == "12mm TZe"
        assert online["last_success_at"] == online["captured_at"]

        agent.stop()
        await runner.after(1)
        offline = await status()
        assert offline["online"] is False, offline
        # The last attempt moves on; the last success and its snapshot stay.
        assert offline["last_success_at"] == online["last_success_at"]
        assert offline["captured_at"] > online["captured_at"]
        assert offline["state"] == "idle" and offline["media"] == online["media"]
        assert "no SNMP answer" in offline["last_error"]
        assert offline["note"].startswith("offline: the last probe failed")
        await runner.after(1)
        later = await status()
        assert later["captured_at"] > offline["captured_at"]
        assert later["last_success_at"] == online["last_success_at"]
        assert later["last_success_age_s"] > later["last_probe_age_s"]
        assert not task.done()
    finally:
        runner.request_stop()
        await asyncio.wait_for(task, DEADLINE_S)
        await _forget(engine, agent.port)


async def test_readiness_is_judged_on_the_last_success(api: Api, unique: str) -> None:
    assert api.state.engine is not None
    engine = api.state.engine
    spec = PrinterSpec(name=unique, model="PT-P750W", host="127.0.0.1", port=2)
    await run_in_transaction(engine, lambda c: store.upsert_printer(c, spec))
    try:
        now = datetime.now(UTC)

        async def probed(success_age_s: float) -> Any:
            await run_in_transaction(
                engine,
                lambda c: store.record_success(
                    c, spec.id, {"state": "idle"}, now - timedelta(seconds=success_age_s)
                ),
            )
            # The newest attempt failed a moment ago: fresh attempt, old success.
            await run_in_transaction(
                engine, lambda c: store.record_failure(c, spec.id, "timeout", now)
            )
            return await check_printer_probe(api.state)

        fresh = await probed(10)
        assert fresh.status == "ok", fresh.detail
        await run_in_transaction(engine, lambda c: store.delete_printer(c, spec.id))
        await run_in_transaction(engine, lambda c: store.upsert_printer(c, spec))
        stale = await probed(300)
        assert stale.status == "stale" and unique in stale.detail
        assert stale.observed is not None and 299 < float(stale.observed) < 400
        await run_in_transaction(engine, lambda c: store.delete_printer(c, spec.id))
        await run_in_transaction(engine, lambda c: store.upsert_printer(c, spec))
        failed = await probed(700)
        assert failed.status == "fail"
        r = await api.http.get("/readiness")
        assert r.json()["checks"]["printer_probe"]["status"] == "fail"
        assert r.json()["checks"]["printer_probe"]["critical"] is False
    finally:
        await _forget(engine, 2)
    assert (await check_printer_probe(api.state)).status == "skipped"


def test_the_schema_matches_the_tables(migrated_database: str) -> None:
    # Raises if the models and the migrations disagree ("alembic check").
    command.check(migrations.config(migrated_database))

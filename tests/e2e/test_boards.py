"""The printers and maintenance boards of the live page, in headless Chromium,
against one real ``herald serve`` that probes printers and runs maintenance jobs
in-process, with a real SNMP agent (snmpsim) on loopback.

What they prove: each board shows what Herald keeps (the status cache; jobs and
runs) and follows the topic live — a printer going from idle to cover-open to
offline, a run going from started to completed or failed — with badges and
summary stats that agree with the rows, and admin-only buttons that start runs.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page
from sqlalchemy import delete

from herald.api.auth import Authenticator
from herald.journal.maintenance import MaintenanceStore
from herald.journal.runtime.db import make_engine
from herald.journal.runtime.settings import Settings
from herald.journal.tables import maintenance_jobs, printers
from tests.conftest import DATABASE_URL
from tests.e2e.conftest import Deadline
from tests.e2e.tabs import errors, open_tab, wait_js
from tests.servers import TEST_SECRET, HeraldProcess
from tests.snmp_agent import SnmpAgent, warm_up

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

BUDGET_S = 150.0
INTERVAL_S = 1.5


@pytest.fixture(scope="module")
def board_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeraldProcess]:
    """A server with the probe and a worker in-process (the embedded default), and
    both topics readable by any signed-in user."""
    with HeraldProcess(
        tmp_path_factory.mktemp("herald"),
        HERALD_WORKER_IN_PROCESS="true",
        HERALD_PRINTER_PROBE_INTERVAL_S=str(INTERVAL_S),
        HERALD_PRINTER_PROBE_TIMEOUT_S="1",
        HERALD_TOPICS='{"printers": ["*"], "maintenance": ["*"]}',
    ) as server:
        yield server


def token(user: str, *roles: str) -> str:
    auth = Authenticator(Settings(jwt_secret=TEST_SECRET, redis_url="memory://"))  # type: ignore[arg-type]
    return auth.issue(user, roles)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[SnmpAgent]:
    found = SnmpAgent(tmp_path)
    yield found
    found.close()


@pytest.fixture
async def store(unique: str) -> AsyncIterator[MaintenanceStore]:
    """The maintenance store of the server's database; jobs keyed ``<unique>-…`` (and
    their runs) are removed afterwards."""
    engine = make_engine(Settings.load(database_url=DATABASE_URL, redis_url="memory://"))
    try:
        yield MaintenanceStore(engine)
    finally:
        async with engine.begin() as conn:
            await conn.execute(
                delete(maintenance_jobs).where(maintenance_jobs.c.key.like(f"{unique}-%"))
            )
        await engine.dispose()


async def open_board(
    browser: Browser, server: HeraldProcess, jwt: str, board: str, deadline: Deadline
) -> Page:
    context = await browser.new_context()
    page = await open_tab(context, f"{server.url}/?token={jwt}#{board}", deadline)
    await wait_js(
        page,
        f"document.getElementById('{board}-state')?.textContent === 'open'",
        deadline,
        f"the {board} board never subscribed",
    )
    return page


async def wait_row(page: Page, selector: str, deadline: Deadline, what: str) -> None:
    await wait_js(page, f"document.querySelector({selector!r}) !== null", deadline, what)


async def texts(page: Page, selector: str) -> dict[str, str]:
    """``data-col`` -> text of the cells of the row matching ``selector``."""
    found: dict[str, str] = await page.evaluate(
        """(sel) => Object.fromEntries([...document.querySelector(sel).cells]
                     .map((td) => [td.dataset.col, td.textContent]))""",
        selector,
    )
    return found


# -- printers ---------------------------------------------------------------------------


async def test_printers_board_follows_a_printer_from_idle_to_cover_open_to_offline(
    browser: Browser, board_server: HeraldProcess, agent: SnmpAgent, unique: str
) -> None:
    deadline = Deadline(BUDGET_S)
    agent.load(unique, "idle")
    agent.start()
    await warm_up(agent, unique)
    # A plain user (no role): HERALD_TOPICS lets anyone read "printers".
    page = await open_board(browser, board_server, token(unique), "printers", deadline)
    assert await page.is_hidden("#panel-events")

    body = {
        "name": f"Label {unique}",
        "model": f"PT-P750W-{unique}",
        "host": "127.0.0.1",
        "port": agent.port,
        "community": unique,
    }
    admin = {"Authorization": f"Bearer {token('root', 'admin')}"}
    async with httpx.AsyncClient(base_url=board_server.url, headers=admin, timeout=30) as http:
        created = await http.post("/api/printers", json=body)
        assert created.status_code == 201, created.text
        pid = created.json()["id"]
        row = f"tr[data-printer-id='{pid}']"
        try:
            # Registered after the board loaded: it appears with its first probe's event.
            await wait_row(
                page,
                f"{row}[data-status=online][data-state=idle]",
                deadline,
                "the printer never showed online and idle",
            )
            cells = await texts(page, row)
            assert (
                cells["name"].startswith(f"Label {unique}")
                and f"PT-P750W-{unique}" in cells["name"]
            )
            assert cells["status"] == "online" and cells["errors"] == "none"
            assert cells["media"] == "12mm TZe · 12 mm"
            assert re.fullmatch(r"\d+ s ago", cells["age"]), cells

            agent.load(unique, "cover_open_no_paper")
            await wait_row(
                page, f"{row}[data-state=other]", deadline, "the cover-open state never showed"
            )
            badges = await page.eval_on_selector_all(
                f"{row} td[data-col=errors] .badge", "els => els.map(e => e.textContent)"
            )
            assert badges == ["noPaper", "doorOpen", "outputNearFull", "inputTrayEmpty"]

            agent.stop()
            await wait_row(
                page, f"{row}[data-status=offline]", deadline, "the printer never showed offline"
            )
            cells = await texts(page, row)
            assert cells["status"] == "offline"
            cached = (await http.get(f"/api/printers/{pid}/status")).json()
            assert cached["last_error"] and cells["last-error"] == cached["last_error"]
            # The last successful snapshot stays on show, and its age keeps growing.
            assert cells["state"] == "other" and "doorOpen" in cells["errors"]
            first_age = cells["age"]
            await wait_js(
                page,
                f'document.querySelector("{row} td[data-col=age]").textContent !== {first_age!r}',
                deadline,
                "the age of the last success never moved",
            )
            # The summary agrees with the rows.
            stats = await page.evaluate(
                """() => {
                  const rows = [...document.querySelectorAll('#printers-rows tr[data-printer-id]')];
                  const by = (s) => rows.filter((r) => r.dataset.status === s).length;
                  const n = (id) => Number(document.getElementById(id).textContent);
                  return {rows: rows.length, online: by('online'), offline: by('offline'),
                          total: n('printers-total'), shownOnline: n('printers-online'),
                          shownOffline: n('printers-offline')};
                }"""
            )
            assert stats["total"] == stats["rows"] and stats["offline"] >= 1, stats
            assert (stats["shownOnline"], stats["shownOffline"]) == (
                stats["online"],
                stats["offline"],
            )

            # A fresh page shows the same from the cache alone.
            fresh = await open_board(browser, board_server, token(unique), "printers", deadline)
            await wait_row(
                fresh,
                f"{row}[data-status=offline][data-state=other]",
                deadline,
                "a fresh page did not show the cached status",
            )
            assert errors[fresh] == []
        finally:
            await http.delete(f"/api/printers/{pid}")
    assert errors[page] == []


async def test_printers_board_is_refused_the_topic_without_a_token_that_may_read_it(
    browser: Browser, tmp_path: Path, unique: str
) -> None:
    deadline = Deadline(BUDGET_S)
    with HeraldProcess(tmp_path) as server:  # no HERALD_TOPICS: only admins read "printers"
        context = await browser.new_context()
        page = await open_tab(context, f"{server.url}/?token={token(unique)}#printers", deadline)
        await wait_js(
            page,
            "document.getElementById('message').textContent.includes('403')"
            " || document.getElementById('message').textContent.includes('not readable')",
            deadline,
            "the refusal was never shown",
        )
        assert await page.text_content("#printers-total") == "0"


# -- maintenance ------------------------------------------------------------------------


async def test_maintenance_board_lists_visible_jobs_and_shows_a_run_started_elsewhere_live(
    browser: Browser, board_server: HeraldProcess, store: MaintenanceStore, unique: str
) -> None:
    deadline = Deadline(BUDGET_S)
    await store.create_job(f"{unique}-quick", "noop", visible_in_ui=True)
    page = await open_board(browser, board_server, token(unique), "maintenance", deadline)

    await wait_row(
        page, f"#maintenance-jobs tr[data-job='{unique}-quick']", deadline, "the jobs never loaded"
    )
    nightly = await texts(page, "#maintenance-jobs tr[data-job=retention_cleanup_nightly]")
    assert nightly["schedule"] == "0 3 * * * (UTC)"
    assert nightly["next-run"] != "—" and nightly["enabled"] == "enabled"
    assert (
        await page.query_selector("#maintenance-jobs tr[data-job=retention_cleanup_manual]") is None
    )  # hidden
    # Not an admin: no buttons that start runs.
    assert await page.is_hidden("#maintenance-retention")
    assert await page.query_selector("#maintenance-jobs button") is None

    admin = {"Authorization": f"Bearer {token('root', 'admin')}"}
    async with httpx.AsyncClient(base_url=board_server.url, headers=admin, timeout=30) as http:
        started = await http.post(f"/api/maintenance/jobs/{unique}-quick/run")
        assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    # The page fetched nothing since it loaded: only the topic can bring this run.
    await wait_row(
        page,
        f"tr[data-run-id='{run_id}'][data-status=success]",
        deadline,
        "the run never showed as succeeded",
    )
    cells = await texts(page, f"tr[data-run-id='{run_id}']")
    assert cells["job"] == f"{unique}-quick" and cells["trigger"] == "manual"
    assert cells["status"] == "success" and cells["result"] == "slept_s 0"
    assert cells["started"] != "—" and cells["finished"] != "—" and cells["duration"].endswith(" s")
    await wait_js(
        page,
        f"document.querySelector(\"#maintenance-jobs tr[data-job='{unique}-quick'] "
        "td[data-col=last-run] .badge\")?.textContent === 'success'",
        deadline,
        "the job's last run never showed the run",
    )
    await assert_stats_match_rows(page)
    assert errors[page] == []


async def test_maintenance_board_admin_runs_retention_now_and_a_job_whose_run_fails(
    browser: Browser, board_server: HeraldProcess, store: MaintenanceStore, unique: str
) -> None:
    deadline = Deadline(BUDGET_S)
    await store.create_job(f"{unique}-broken", "noop", params={"sleep_s": "soon"})
    page = await open_board(browser, board_server, token(unique, "admin"), "maintenance", deadline)
    await wait_row(
        page, f"#maintenance-jobs tr[data-job='{unique}-broken']", deadline, "the jobs never loaded"
    )
    assert await page.is_visible("#maintenance-retention")

    async with page.expect_response("**/api/maintenance/retention/run") as answer:
        await page.click("#maintenance-retention")
    response = await answer.value
    assert response.status == 202
    retention = f"#maintenance-runs tr[data-run-id='{(await response.json())['run_id']}']"
    await wait_row(
        page,
        f"{retention}[data-job=retention_cleanup_manual][data-status=success]",
        deadline,
        "the retention run never showed as succeeded",
    )
    cells = await texts(page, retention)
    assert cells["trigger"] == "manual"
    # The total, then each part's count (in whatever order the result's JSON holds them).
    first, *parts = cells["result"].split(" · ")
    assert re.fullmatch(r"deleted \d+", first), cells
    assert {re.sub(r" \d+$", "", part) for part in parts} == {
        "message_events_retention",
        "stream_retention",
        "uploads_retention",
        "dead_letter_retention",
        "printer_status_retention",
    }, cells

    await page.click(f"#maintenance-jobs tr[data-job='{unique}-broken'] button[data-action=run]")
    broken = f"#maintenance-runs tr[data-job='{unique}-broken']"
    await wait_row(
        page, f"{broken}[data-status=failed]", deadline, "the run never showed as failed"
    )
    cells = await texts(page, broken)
    assert cells["status"] == "failed" and "invalid_params" in cells["result"]
    badge: Any = await page.get_attribute(f"{broken} td[data-col=status] .badge", "data-tone")
    assert badge == "bad"
    await assert_stats_match_rows(page)
    assert errors[page] == []


async def assert_stats_match_rows(page: Page) -> None:
    stats = await page.evaluate(
        """() => {
          const rows = [...document.querySelectorAll('#maintenance-runs tr[data-run-id]')];
          const by = (s) => rows.filter((r) => r.dataset.status === s).length;
          const n = (id) => Number(document.getElementById(id).textContent);
          return {rows: [rows.length, by('running'), by('success'), by('failed')],
                  shown: [n('maintenance-total'), n('maintenance-running'),
                          n('maintenance-success'), n('maintenance-failed')]};
        }"""
    )
    assert stats["rows"] == stats["shown"], stats


# -- the printer the tests registered is theirs to remove -------------------------------


@pytest.fixture(autouse=True)
async def _forget_printers(unique: str) -> AsyncIterator[None]:
    yield
    engine = make_engine(Settings.load(database_url=DATABASE_URL, redis_url="memory://"))
    try:
        async with engine.begin() as conn:
            await conn.execute(delete(printers).where(printers.c.community == unique))
    finally:
        await engine.dispose()

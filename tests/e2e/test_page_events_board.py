"""The page events board in a real browser: it resolves the route it was given,
and re-resolves live on ``page_event.changed`` — after a create, an ambiguity, a
delete, and when a window opens by time — without reloading or polling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import pytest
from playwright.async_api import Browser, Page

from herald.api.auth import Authenticator
from herald.journal.runtime.settings import Settings
from tests.e2e.conftest import Deadline
from tests.e2e.tabs import wait_js
from tests.servers import TEST_SECRET, HeraldProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

BUDGET_S = 120.0


async def wait_current(page: Page, kind: str, text: str, deadline: Deadline) -> None:
    """Wait until "Applies now" is of ``kind`` and contains ``text``."""
    await wait_js(
        page,
        f"""(() => {{ const el = document.getElementById('pe-current');
             return el && el.dataset.kind === {kind!r}
               && el.textContent.includes({text!r}); }})()""",
        deadline,
        f"the board never showed {kind} {text!r}",
    )


async def test_board_follows_changes_and_windows_live(
    browser: Browser, server: HeraldProcess, unique: str
) -> None:
    deadline = Deadline(BUDGET_S)
    auth = Authenticator(Settings(jwt_secret=TEST_SECRET, redis_url="memory://"))
    token = auth.issue(f"{unique}-admin", ("admin",), 600)
    headers = {"Authorization": f"Bearer {token}"}
    route = f"/{unique}/reviews"

    page = await browser.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    await page.goto(f"{server.url}/?token={token}&route={quote(route)}#page-events")
    await wait_js(
        page,
        "document.getElementById('pe-state')?.textContent === 'open'",
        deadline,
        "the board never subscribed",
    )
    await wait_current(page, "none", "none", deadline)

    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as http:
        r = await http.post(
            "/api/page-events",
            json={"name": "Spring", "page_context": route, "filters": {"media_types": ["video"]}},
        )
        assert r.status_code == 201, r.text
        first = r.json()["uid"]
        await wait_current(page, "event", f"Spring ({first})", deadline)
        assert await page.text_content("#pe-filters") == '{"media_types":["video"]}'
        await wait_js(
            page,
            f"document.querySelector('#pe-rows tr[data-uid=\"{first}\"]') !== null",
            deadline,
            "the list never showed the new event",
        )

        r = await http.post("/api/page-events", json={"name": "Rival", "page_context": route})
        second = r.json()["uid"]
        await wait_current(page, "ambiguous", min(first, second), deadline)
        assert max(first, second) in (await page.text_content("#pe-current") or "")

        assert (await http.delete(f"/api/page-events/{second}")).status_code == 204
        await wait_current(page, "event", "Spring", deadline)
        assert (await http.delete(f"/api/page-events/{first}")).status_code == 204
        await wait_current(page, "none", "none", deadline)

        # A window two seconds ahead: nothing now, the event once it opens.
        start = datetime.now(UTC) + timedelta(seconds=2)
        r = await http.post(
            "/api/page-events",
            json={"name": "Later", "page_context": route, "start_date": start.isoformat()},
        )
        later = r.json()["uid"]
        await wait_js(
            page,
            f"window.heraldPageEvents.changes.some(c => c.uid === {later!r})",
            deadline,
            "the board never heard of the new event",
        )
        assert (await page.get_attribute("#pe-current", "data-kind")) == "none"
        await wait_current(page, "event", f"Later ({later})", deadline)
        heard = await page.evaluate(
            f"window.heraldPageEvents.changes.filter(c => c.uid === {later!r}).map(c => c.change)"
        )
        assert heard == ["created", "window_opened"]
        assert datetime.now(UTC) >= start
        await http.delete(f"/api/page-events/{later}")
    assert page_errors == []

"""``/herald.js`` and ``/boards/<name>.js``: served as JavaScript, revalidated, and
the same bytes as the client published under clients/js/."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

import httpx
import pytest

from herald.api.app import create_app
from herald.api.auth import Authenticator
from herald.api.state import memory_state
from herald.journal.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "js"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(jwt_secret="k" * 40, redis_url="memory://")  # type: ignore[arg-type]
    app = create_app(settings, state=memory_state(settings, Authenticator(settings)))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://herald"
    ) as client:
        yield client


async def test_herald_js_is_the_published_client_served_as_javascript(http):
    r = await http.get("/herald.js")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.content == (CLIENT / "herald.js").read_bytes()
    assert b"export function subscribe(" in r.content
    assert b"export function subscribeMessage(" in r.content


async def test_an_unchanged_script_is_a_304(http):
    etag = (await http.get("/herald.js")).headers["etag"]
    r = await http.get("/herald.js", headers={"If-None-Match": etag})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == etag
    changed = await http.get("/herald.js", headers={"If-None-Match": '"something-else"'})
    assert changed.status_code == 200


async def test_boards_are_served_by_name_and_nothing_else_is(http):
    r = await http.get("/boards/events.js")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    assert b"export function mount(" in r.content
    for path in ("/boards/missing.js", "/boards/Events.js", "/boards/..%2Fherald.js"):
        refused = await http.get(path)
        assert refused.status_code == 404, path
        assert refused.json()["error"] == "not_found"


def test_the_installed_package_carries_the_client_and_the_boards():
    static = resources.files("herald.api").joinpath("static")
    assert static.joinpath("herald.js").read_bytes() == (CLIENT / "herald.js").read_bytes()
    assert static.joinpath("boards", "events.js").is_file()
    assert static.joinpath("index.html").is_file()


def test_the_npm_package_exports_the_module():
    package = json.loads((CLIENT / "package.json").read_text())
    assert package["type"] == "module"
    assert package["exports"]["."] == "./herald.js"
    assert "herald.js" in package["files"]


def test_every_board_file_is_a_tab_of_the_live_page_and_every_tab_has_its_file():
    static = resources.files("herald.api").joinpath("static")
    page = static.joinpath("index.html").read_text()
    tabs = re.findall(r'\{ id: "([a-z][a-z0-9-]*)", title: "[^"]+" \}', page)
    names = sorted(
        p.name.removesuffix(".js")
        for p in static.joinpath("boards").iterdir()
        if p.name.endswith(".js")
    )
    files = [n for n in names if not n.startswith("_")]  # "_x.js": shared by the boards
    assert tabs[0] == "events"  # the first tab is the default
    assert sorted(tabs) == files == ["events", "maintenance", "page-events", "printers"]
    for name in names:
        mounts = "export function mount(" in static.joinpath("boards", f"{name}.js").read_text()
        assert mounts == (name in files), name

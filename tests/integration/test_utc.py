"""Every JSON API response writes its datetimes as RFC 3339 UTC with a ``Z``.

The routes are asked of the code, not listed here: the test walks every route of
the app ``herald serve`` runs, in an order that lets creations feed the routes
that need an id (``POST /api/messages`` → ``/api/messages/{id}/…``), calls each
method on a real server with an admin token, and walks every JSON body:

* a string that starts like a date and time (``2026-11-22T10:00`` or
  ``2026-11-22 10:00``) must be exactly ``YYYY-MM-DDTHH:MM:SS[.fraction]Z``;
* a value under a key named ``time`` or ``*_at`` must be such a string (or null),
  so a unix number or an offset like ``+00:00`` fails too.

SSE responses are skipped (their envelopes are the same ones history returns).
Sample bodies make the creations succeed where the shape is known; any other
route still has its (error) body checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from herald.api.app import create_app
from herald.journal.runtime.settings import Settings
from tests.servers import TEST_SECRET, HeraldProcess

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 60.0
DATETIME_LIKE = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d")
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")
PARAM = re.compile(r"{(\w+)(?::\w+)?}")
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


def sample_bodies(user: str) -> dict[tuple[str, str], Any]:
    return {
        ("POST", "/api/publish"): {"user": user, "type": "utc.check.done", "data": {"n": 1}},
        ("POST", "/api/messages"): {"user": user},
        ("POST", "/api/messages/{id}/events"): {"type": "token", "payload": {"text": "hi"}},
        ("POST", "/api/tasks"): {"kind": "utc.check", "user": user, "payload": {}},
    }


SAMPLE_QUERY: dict[tuple[str, str], dict[str, str]] = {
    ("GET", "/api/messages/{id}/events"): {"format": "json"},
}


def app_routes() -> list[tuple[str, str]]:
    """(method, path template) of every HTTP route the served app has."""
    settings = Settings.load(redis_url="memory://", jwt_secret=TEST_SECRET)
    found = []
    for route in create_app(settings).app.routes:
        if isinstance(route, Route):
            found += [(m, route.path) for m in sorted(route.methods or ()) if m != "HEAD"]
    # Creations first (they hand out ids), then other writes (ending ones last), then reads.
    ending = ("/complete", "/fail")
    return sorted(found, key=lambda r: (r[0] != "POST", "{" in r[1], r[1].endswith(ending), r[1]))


def walk(value: Any, where: str, bad: list[str], seen: list[str], timeish: bool = False) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            named = key == "time" or key.endswith("_at")
            walk(item, f"{where}.{key}", bad, seen, named)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            walk(item, f"{where}[{i}]", bad, seen)
    elif isinstance(value, str) and (timeish or DATETIME_LIKE.match(value)):
        seen.append(where)
        if not RFC3339_UTC.fullmatch(value):
            bad.append(f"{where} = {value!r}")
    elif timeish and value is not None:
        bad.append(f"{where} = {value!r} (a time must be an RFC 3339 string)")


def fill(template: str, ids: dict[str, dict[str, str]]) -> str:
    prefix = template.split("{", 1)[0].rstrip("/")
    known = ids.get(prefix, {})
    return PARAM.sub(lambda m: known.get(m.group(1), known.get("id", UNKNOWN_ID)), template)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeraldProcess]:
    proc = HeraldProcess(tmp_path_factory.mktemp("utc"))
    proc.start(timeout=START_TIMEOUT_S)
    try:
        yield proc
    finally:
        proc.stop()


def test_every_json_response_uses_rfc3339_utc(server: HeraldProcess, unique: str) -> None:
    user = f"utc-{unique}"
    headers = {"Authorization": f"Bearer {server.token(user, 'admin')}"}
    bodies = sample_bodies(user)
    ids: dict[str, dict[str, str]] = {}
    bad: list[str] = []
    seen: list[str] = []
    report: list[str] = []
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as http:
        for method, template in app_routes():
            path = fill(template, ids)
            kwargs: dict[str, Any] = {"params": SAMPLE_QUERY.get((method, template))}
            if method in ("POST", "PUT", "PATCH"):
                kwargs["json"] = bodies.get((method, template), {})
            with http.stream(method, path, **kwargs) as r:
                kind = r.headers.get("content-type", "")
                report.append(f"{method} {template} -> {r.status_code} {kind}")
                if not kind.startswith("application/json"):
                    continue  # SSE, HTML, Prometheus text, 204s
                body = r.read()
            data = httpx.Response(200, content=body).json()
            walk(data, f"{method} {template}", bad, seen)
            if method == "POST" and "{" not in template and isinstance(data, dict):
                ids[template] = {
                    k: str(v) for k, v in data.items() if k == "id" or k.endswith("_id")
                }
    summary = "\n".join(report)
    assert bad == [], f"non-RFC 3339 UTC times:\n{bad}\n\nroutes:\n{summary}"
    # Not vacuous: the core routes' times were among those checked.
    for must in ("GET /healthz.started_at", "GET /readiness.checks", "GET /api/whoami.expires_at"):
        assert any(s.startswith(must) for s in seen), f"{must} not checked:\n{summary}"
    assert any(s.startswith("GET /api/events/history.events") for s in seen), summary


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ({"time": "2026-11-22T10:00:00.123Z"}, True),
        ({"created_at": "2026-11-22T10:00:00Z"}, True),
        ({"expires_at": None}, True),
        ({"note": "2026 was a year"}, True),
        ({"time": "2026-11-22T10:00:00+00:00"}, False),
        ({"updated_at": "2026-11-22 10:00:00"}, False),
        ({"expires_at": 1795371545.0}, False),
        ({"nested": [{"x": "2026-11-22T10:00:00.123456"}]}, False),
    ],
)
def test_the_walker_itself(value: Any, ok: bool) -> None:
    bad: list[str] = []
    walk(value, "$", bad, [])
    assert (bad == []) is ok, bad


def test_fill_uses_ids_from_creations() -> None:
    ids = {"/api/messages": {"id": "m-1"}, "/api/tasks": {"task_id": "t-9"}}
    assert fill("/api/messages/{id}/events", ids) == "/api/messages/m-1/events"
    assert fill("/api/tasks/{task_id}", ids) == "/api/tasks/t-9"
    assert fill("/api/sources/{source_id}", ids) == f"/api/sources/{UNKNOWN_ID}"

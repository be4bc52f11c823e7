"""The OpenAPI document and the error table: complete, valid, and in step with the code."""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from herald.api.errors import DOMAIN_ERRORS, ERRORS, exception_handlers
from herald.api.members.directory import UpstreamRateLimited
from herald.api.openapi import declaration_of, endpoint, openapi_document, undocumented
from herald.api.routes import routes
from herald.journal.base import JournalUnavailable
from herald.journal.messages.writer import WriterOverloaded

REPO = Path(__file__).resolve().parents[2]


def _handlers() -> list[tuple[str, Any]]:
    return [
        (f"{method} {route.path}", route.endpoint)
        for route in routes
        if isinstance(route, Route)
        for method in sorted(route.methods or ())
        if method != "HEAD"
    ]


def test_every_route_declares_itself_for_the_document():
    missing = undocumented(routes)
    assert not missing, (
        "these routes have no @endpoint(...) declaration, so /openapi.json and the "
        "schemathesis fuzz leave them out; declare each next to its handler "
        f"(see herald.api.openapi): {', '.join(missing)}"
    )


def test_the_document_is_valid_openapi_3_1_and_lists_every_route():
    document = openapi_document(routes, "test")
    validate(document)
    assert document["openapi"] == "3.1.0"
    listed = {f"{m.upper()} {p}" for p, item in document["paths"].items() for m in item}
    assert listed == {name for name, _ in _handlers()}


def test_a_route_without_a_declaration_is_named_by_the_document():
    async def bare(_: Request) -> None: ...

    with pytest.raises(LookupError, match=r"GET /api/bare"):
        openapi_document([*routes, Route("/api/bare", bare, methods=["GET"])], "test")


def test_a_declaration_may_only_name_codes_of_the_error_table():
    with pytest.raises(ValueError, match="no_such_code"):
        endpoint("x", {200: None}, errors=("no_such_code",))


def test_security_schemes_cover_bearer_cookie_and_ticket():
    document = openapi_document(routes, "test")
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer"
    assert schemes["cookie"] == {"type": "apiKey", "in": "cookie", "name": "herald_token"}
    assert schemes["ticket"]["in"] == "query"
    stream = document["paths"]["/api/events"]["get"]
    assert {"ticket": []} in stream["security"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert document["paths"]["/healthz"]["get"]["security"] == []


def test_error_answers_are_documented_with_the_error_body():
    publish = openapi_document(routes, "test")["paths"]["/api/publish"]["post"]
    for status in ("401", "403", "413", "422", "503"):
        schema = publish["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}
    assert "`envelope_too_large`" in publish["responses"]["413"]["description"]


@pytest.mark.parametrize(("name", "handler"), _handlers())
def test_the_documented_body_is_the_model_the_handler_parses(name: str, handler: Any):
    declared = declaration_of(handler)
    assert declared is not None
    parsed_here = set(re.findall(r"parse_body\(\s*(\w+)", inspect.getsource(handler)))
    module = inspect.getsource(sys.modules[handler.__module__])
    if declared.body is None:
        assert not parsed_here, f"{name} parses {parsed_here} but documents no body"
        return
    assert parsed_here <= {declared.body.__name__}, f"{name} parses {parsed_here}"
    assert re.search(rf"parse_body\(\s*{declared.body.__name__}\b", module), (
        f"{name} documents {declared.body.__name__}, which its module never parses"
    )


def _raised_codes() -> set[tuple[int, str, str]]:
    found = set()
    pattern = re.compile(r'(?:ApiError|AuthError)\(\s*(\d{3}),\s*"([a-z0-9_]+)"')
    for path in (REPO / "api").rglob("*.py"):
        for status, code in pattern.findall(path.read_text()):
            found.add((int(status), code, path.name))
    return found


def test_every_code_the_api_raises_is_in_the_table_with_its_status():
    wrong = sorted(
        f"{code} ({status} in {where}, table: {ERRORS[code].status if code in ERRORS else 'none'})"
        for status, code, where in _raised_codes()
        if code not in ERRORS or ERRORS[code].status != status
    )
    assert not wrong, (
        "add these codes to herald.api.errors.ERRORS and the README's error table: "
        + ", ".join(wrong)
    )


def _subclasses(kind: type) -> list[type]:
    return [kind, *(sub for direct in kind.__subclasses__() for sub in _subclasses(direct))]


def test_every_domain_error_code_is_in_the_table():
    missing = {
        kind.__name__: kind.code
        for base in DOMAIN_ERRORS
        for kind in _subclasses(base)
        if getattr(kind, "code", None) not in ERRORS
    }
    assert not missing


def _readme_error_table() -> set[tuple[int, str]]:
    text = (REPO / "README.md").read_text()
    start = text.index("Every error is JSON")
    rows = set()
    for line in text[start:].splitlines()[2:]:
        if line.startswith("|---"):
            continue
        if not line.startswith("|"):
            if rows:
                break
            continue
        status, codes = line.split("|")[1:3]
        if status.strip().isdigit():
            rows |= {(int(status), code) for code in re.findall(r"`([a-z0-9_]+)`", codes)}
    return rows


def test_the_readme_error_table_is_the_code_table():
    readme = _readme_error_table()
    table = {(entry.status, code) for code, entry in ERRORS.items()}
    assert not table - readme, f"missing from the README's error table: {sorted(table - readme)}"
    assert not readme - table, f"in the README but not in ERRORS: {sorted(readme - table)}"


async def _answer(exc: Exception) -> httpx.Response:
    async def fail(_: Request) -> None:
        raise exc

    app = Starlette(routes=[Route("/", fail)], exception_handlers=exception_handlers)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get("/")


async def test_a_domain_error_answers_by_its_code_with_the_tables_retry_after():
    response = await _answer(WriterOverloaded("the writer's buffer is full"))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json() == {
        "error": "writer_overloaded",
        "detail": "the writer's buffer is full",
    }


async def test_a_domain_errors_own_retry_after_wins_over_the_tables():
    response = await _answer(UpstreamRateLimited("slow down", 7))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"


async def test_a_redis_failure_answers_503_without_the_drivers_message():
    response = await _answer(JournalUnavailable("Error 111 connecting to 10.1.2.3:6379"))
    assert response.status_code == 503
    assert response.json()["error"] == "journal_unavailable"
    assert "10.1.2.3" not in response.text


async def test_an_unexpected_error_is_a_json_500():
    response = await _answer(RuntimeError("boom"))
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    assert "boom" not in response.text


def test_the_docs_page_loads_nothing_from_another_host():
    page = (REPO / "api" / "static" / "docs.html").read_text()
    assert "/openapi.json" in page
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page)
    assert "import(" not in page


_QUERY_READ = re.compile(
    r"""query(?:_params)?\.(?:get|getlist)\(\s*"(\w+)"|query_params\[\s*"(\w+)"\]"""
    r"""|"(\w+)" in request\.query_params"""
)
_CALL = re.compile(r"\b(_?\w+)\(")
_CREDENTIALS = {"ticket", "token"}  # documented as security schemes, not parameters


def _query_names_read(handler: Any) -> set[str]:
    """The query parameters ``handler`` and the module functions it calls read."""
    module = sys.modules[handler.__module__]
    source = inspect.getsource(handler)
    sources = [source]
    for name in set(_CALL.findall(source)):
        helper = getattr(module, name, None)
        if inspect.isfunction(helper) and helper.__module__ == module.__name__:
            sources.append(inspect.getsource(helper))
    names = {a or b or c for text in sources for a, b, c in _QUERY_READ.findall(text)}
    if "_MAX_PARAM.items()" in source:  # the OAuth callback reads a table of names
        names |= set(module._MAX_PARAM)
    return names - _CREDENTIALS


@pytest.mark.parametrize(("name", "handler"), _handlers())
def test_the_documented_query_is_what_the_handler_reads(name: str, handler: Any):
    declared = declaration_of(handler)
    assert declared is not None
    documented = set(declared.query.model_fields) if declared.query is not None else set()
    assert _query_names_read(handler) == documented, name

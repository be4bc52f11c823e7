"""schemathesis against a real ``herald serve``: every documented route, no 5xx.

The server runs with everything a route may need (Redis, PostgreSQL, a member
directory on loopback, a connector root), so a 503 here would be a bug too. It
gets a database and a Redis database of its own: the fuzz registers printers,
changes maintenance schedules and queues tasks, none of which another test's
worker may ever pick up.
schemathesis (a bounded number of cases per operation, a fixed seed) checks that
each answer's status, content type, headers and body conform to /openapi.json,
that credentials are required where documented and that input the document rules
out is refused;
the server's own request counters then show that every documented operation was
called and that none answered 5xx. ``tests/fuzz_hooks.py`` signs the token.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from tests.conftest import DATABASE_URL, REDIS_URL, redis_url_with_db
from tests.member_directory import MemberDirectoryServer
from tests.servers import TEST_SECRET, HeraldProcess

pytestmark = pytest.mark.integration

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
REPO = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("HERALD_FUZZ_SEED", "1"))
MAX_EXAMPLES = int(os.environ.get("HERALD_FUZZ_MAX_EXAMPLES", "15"))
REDIS_DB = int(os.environ.get("HERALD_TEST_FUZZ_REDIS_DB", "14"))
_MARK = "herald-test-fuzz"  # claims the Redis database for this test
CHECKS = os.environ.get("HERALD_FUZZ_CHECKS") or ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "ignored_auth",  # a route documented as needing a credential refuses none
        "negative_data_rejection",  # input the document rules out is a 4xx, not ignored
    ]
)
_COUNTER = re.compile(
    r'^herald_http_requests_total\{method="(\w+)",route="([^"]*)",status="(\d+)"\} (\S+)$', re.M
)


@pytest.fixture
def fuzz_database() -> Iterator[str]:
    """A PostgreSQL database of this test's own, dropped at the end."""
    name = f"herald_fuzz_{uuid.uuid4().hex[:10]}"
    admin = DATABASE_URL.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fuzz_redis() -> Iterator[str]:
    """A Redis database of this test's own (``HERALD_TEST_FUZZ_REDIS_DB``), emptied
    before and after; one that holds anything else is refused, never flushed."""
    url = redis_url_with_db(REDIS_URL, REDIS_DB)
    if url == REDIS_URL:
        pytest.fail(f"HERALD_TEST_FUZZ_REDIS_DB={REDIS_DB} is the shared test database")
    client = redis.Redis.from_url(url)
    try:
        size = client.dbsize()
        if size and not client.exists(_MARK):
            pytest.fail(
                f"Redis database {REDIS_DB} holds {size} keys of something else; "
                "set HERALD_TEST_FUZZ_REDIS_DB to an empty one"
            )
        client.flushdb()
        client.set(_MARK, "1")
        yield url
        client.flushdb()
    finally:
        client.close()


def _requests_by_route(metrics: str) -> Counter[tuple[str, str, int]]:
    counts: Counter[tuple[str, str, int]] = Counter()
    for method, route, status, value in _COUNTER.findall(metrics):
        counts[(method, route, int(status))] += int(float(value))
    return counts


@pytest.mark.timeout(420)
def test_schemathesis_finds_no_server_error_and_every_answer_conforms(
    tmp_path: Path, fuzz_database: str, fuzz_redis: str
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "readme.md").write_text("# fuzz\n")
    with (
        MemberDirectoryServer() as directory,
        HeraldProcess(
            tmp_path,
            HERALD_DATABASE_URL=fuzz_database,
            HERALD_REDIS_URL=fuzz_redis,
            HERALD_MEMBER_DIRECTORY_URL=directory.url,
            HERALD_MEMBER_DIRECTORY_KEY="fuzz-directory-key",
            HERALD_CONNECTOR_ROOTS=f'["{docs}"]',
            # OAuth needs a public URL to build its redirect URI; nothing is sent to it.
            HERALD_PUBLIC_URL="http://127.0.0.1:9",
            # Queued tasks are never run: a fuzzed OAuth server URL must not be fetched
            # (the fuzz sends traffic to this loopback server only).
            HERALD_WORKER_IN_PROCESS="false",
            HERALD_PRINTER_PROBE="false",
        ) as server,
    ):
        document = httpx.get(f"{server.url}/openapi.json").json()
        operations = {
            (method.upper(), path) for path, item in document["paths"].items() for method in item
        }
        env = {
            **os.environ,
            "HERALD_JWT_SECRET": TEST_SECRET,
            "SCHEMATHESIS_HOOKS": "tests.fuzz_hooks",
            "PYTHONPATH": str(REPO),
        }
        run = subprocess.run(
            [
                SCHEMATHESIS,
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                CHECKS,
                "--max-examples",
                str(MAX_EXAMPLES),
                "--seed",
                str(SEED),
                "--request-timeout",
                "15",
                "--no-color",
            ],
            cwd=tmp_path,  # schemathesis keeps its caches in the working directory
            env=env,
            capture_output=True,
            text=True,
            timeout=360,
        )
        counts = _requests_by_route(httpx.get(f"{server.url}/metrics").text)
    report = run.stdout + run.stderr
    summary = report[report.rfind("SUMMARY") :] if "SUMMARY" in report else report[-3000:]
    total = sum(counts.values())
    server_errors = {key: n for key, n in counts.items() if key[2] >= 500}
    print(f"schemathesis seed {SEED}: {total} requests, {sum(server_errors.values())} 5xx")
    print(summary)
    assert run.returncode == 0, f"schemathesis failed (seed {SEED}):\n{report[-20000:]}"
    assert not server_errors, f"5xx answers: {server_errors}"
    called = {(method, route) for method, route, _ in counts}
    # /openapi.json is where schemathesis reads the document; it fuzzes the rest.
    missed = sorted(op for op in operations if op not in called)
    assert not missed, f"documented operations never called: {missed}"

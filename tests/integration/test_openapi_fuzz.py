"""schemathesis against a real ``herald serve``: every documented route, no 5xx.

The server runs with everything a route may need (Redis, PostgreSQL, a member
directory on loopback, a connector root), so a 503 here would be a bug too.
schemathesis (a bounded number of cases per operation, a fixed seed) checks that
each answer's status, content type, headers and body conform to /openapi.json;
the server's own request counters then show that every documented operation was
called and that none answered 5xx. ``tests/fuzz_hooks.py`` signs the token.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.member_directory import MemberDirectoryServer
from tests.servers import TEST_SECRET, HeraldProcess

pytestmark = pytest.mark.integration

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
REPO = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("HERALD_FUZZ_SEED", "1"))
MAX_EXAMPLES = int(os.environ.get("HERALD_FUZZ_MAX_EXAMPLES", "15"))
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)
_COUNTER = re.compile(
    r'^herald_http_requests_total\{method="(\w+)",route="([^"]*)",status="(\d+)"\} (\S+)$', re.M
)


def _requests_by_route(metrics: str) -> Counter[tuple[str, str, int]]:
    counts: Counter[tuple[str, str, int]] = Counter()
    for method, route, status, value in _COUNTER.findall(metrics):
        counts[(method, route, int(status))] += int(float(value))
    return counts


@pytest.mark.timeout(420)
def test_schemathesis_finds_no_server_error_and_every_answer_conforms(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "readme.md").write_text("# fuzz\n")
    with (
        MemberDirectoryServer() as directory,
        HeraldProcess(
            tmp_path,
            HERALD_MEMBER_DIRECTORY_URL=directory.url,
            HERALD_MEMBER_DIRECTORY_KEY="fuzz-directory-key",
            HERALD_CONNECTOR_ROOTS=f'["{docs}"]',
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
            cwd=REPO,
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

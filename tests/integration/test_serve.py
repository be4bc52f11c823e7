"""``herald serve`` on the embedded default, driven the way the README tells a newcomer.

Starts the real command in a fresh folder, publishes with curl-equivalent requests
using the printed token, checks the stored envelope, stops it with SIGTERM and
checks nothing it started is left running; a second start finds the data again.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import psutil
import pytest
import redis

pytestmark = pytest.mark.integration

HERALD = str(Path(sys.executable).with_name("herald"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Served:
    proc: subprocess.Popen[str]
    url: str
    token: str
    redis_url: str
    output: list[str]


def _start(folder: Path) -> Served:
    port = _free_port()
    proc = subprocess.Popen(
        [HERALD, "serve", "--port", str(port)],
        cwd=folder,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    token = redis_url = ""
    for line in proc.stdout:
        lines.append(line)
        if m := re.match(r"herald: Redis\s+(\S+)", line):
            redis_url = m.group(1)
        if lines[-2:-1] and "dev token" in lines[-2]:
            token = line.strip()
        if line.startswith("herald: ready") or time.monotonic() > deadline:
            break
    assert token and redis_url, "".join(lines)
    return Served(proc, f"http://127.0.0.1:{port}", token, redis_url, lines)


def _stop(served: Served, sig: int = signal.SIGTERM) -> None:
    served.proc.send_signal(sig)
    out, _ = served.proc.communicate(timeout=30)
    served.output.append(out)


def _leftovers(folder: Path) -> list[str]:
    found = []
    for p in psutil.process_iter(["name", "cmdline", "status"]):
        if p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if str(folder) in " ".join(p.info["cmdline"] or ()):
            found.append(f"{p.pid} {p.info['name']}")
    return found


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for p in psutil.process_iter(["cmdline"]):
        if str(tmp_path) in " ".join(p.info["cmdline"] or ()):
            p.kill()


def test_serve_publish_stop_restart(folder: Path):
    served = _start(folder)
    auth = {"Authorization": f"Bearer {served.token}"}
    event = {
        "user": "alice",
        "type": "source.ingest.progress",
        "data": {"current": 40, "total": 100},
    }
    with httpx.Client(base_url=served.url, timeout=10) as http:
        r = http.post("/api/publish", json=event, headers=auth)
        assert r.status_code == 201, r.text
        published = r.json()["id"]
        # The envelope in Redis is CloudEvents JSON with a Z time.
        with redis.Redis.from_url(served.redis_url) as rc:
            ((entry_id, fields),) = rc.xrange("herald:{u:alice}:stream")
        env = orjson.loads(fields[b"e"])
        assert entry_id.decode() == env["id"] == published
        assert env["specversion"] == "1.0" and env["time"].endswith("Z")
        assert env["type"] == "source.ingest.progress" and env["data"]["current"] == 40

        # Bad inputs: each a 4xx with a reason, never a 500.
        assert http.post("/api/publish", json=event).status_code == 401
        user_token = subprocess.run(
            [HERALD, "token", "--user", "bob"],
            cwd=folder,
            env=_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        forbidden = http.post(
            "/api/publish", json=event, headers={"Authorization": f"Bearer {user_token}"}
        )
        assert forbidden.status_code == 403 and forbidden.json()["error"] == "role_missing"
        big = {**event, "data": {"blob": "x" * 70000}}
        assert http.post("/api/publish", json=big, headers=auth).status_code == 413
        bad = {**event, "type": "NotAType"}
        assert http.post("/api/publish", json=bad, headers=auth).status_code == 422

        # herald publish talks to the running server's Redis.
        cli = subprocess.run(
            [HERALD, "publish", "--user", "alice", "demo.cli", '{"from": "cli"}'],
            cwd=folder,
            env=_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        assert orjson.loads(cli.stdout)["stream"] == "user:alice"

    _stop(served)
    assert served.proc.returncode in (0, 128 + signal.SIGTERM), "".join(served.output)
    assert _leftovers(folder) == []

    again = _start(folder)
    try:
        with redis.Redis.from_url(again.redis_url) as rc:
            assert rc.xlen("herald:{u:alice}:stream") == 2  # data survived the restart
    finally:
        _stop(again, signal.SIGINT)
    assert _leftovers(folder) == []


def test_bad_setting_exits_with_the_variable_named(folder: Path):
    env = {**_env(), "HERALD_STREAM_MAXLEN": "many"}
    r = subprocess.run([HERALD, "serve"], cwd=folder, env=env, capture_output=True, text=True)
    assert r.returncode == 2
    assert "HERALD_STREAM_MAXLEN" in r.stderr and "Traceback" not in r.stderr


def test_serve_refuses_a_database_behind_head_until_migrated(folder: Path, unique: str):
    import psycopg
    from sqlalchemy.engine import make_url

    from tests.conftest import DATABASE_URL, REDIS_URL

    admin_url = DATABASE_URL.replace("+psycopg", "")
    fresh_url = make_url(DATABASE_URL).set(database=unique).render_as_string(hide_password=False)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{unique}"')
    try:
        env = {
            **_env(),
            "HERALD_REDIS_URL": REDIS_URL,
            "HERALD_DATABASE_URL": fresh_url,
            "HERALD_JWT_SECRET": "j" * 40,
        }
        refused = subprocess.run(
            [HERALD, "serve", "--port", str(_free_port())],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 1
        from herald import migrations

        expected = migrations.head_revision()
        assert f"revision none (never migrated), expected {expected}" in refused.stderr
        assert "herald migrate" in refused.stderr
        migrated = subprocess.run(
            [HERALD, "migrate"], cwd=folder, env=env, capture_output=True, text=True, timeout=60
        )
        assert migrated.returncode == 0, migrated.stderr
        assert f"revision {expected} (head)" in migrated.stdout
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{unique}" WITH (FORCE)')

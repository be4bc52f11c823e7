"""The Procfile: every process runs a ``herald`` command that exists, and
``honcho start`` runs them as the README says (release migrates; web, worker and
scheduler come up, and readiness sees the worker's and the scheduler's heartbeats)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import DATABASE_URL
from tests.integration.test_readiness import OwnRedis
from tests.servers import TEST_SECRET, free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HONCHO = str(BIN / "honcho")
ASSIGNMENT = re.compile(r"[A-Z_][A-Z0-9_]*=\S*")


def processes() -> dict[str, list[str]]:
    found = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            found[name.strip()] = shlex.split(command)
    return found


def subcommands() -> set[str]:
    out = subprocess.run(
        [str(BIN / "herald"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"{([a-z,-]+)}", out)
    assert match, out
    return set(match.group(1).split(","))


def test_every_process_runs_an_existing_herald_command() -> None:
    procs = processes()
    assert {"release", "web", "worker", "scheduler"} <= set(procs)
    known = subcommands()
    for name, words in procs.items():
        while words and ASSIGNMENT.fullmatch(words[0]):
            words = words[1:]  # VAR=value prefixes
        assert words[:1] == ["herald"], name
        assert words[1] in known, f"{name}: `herald {words[1]}` does not exist ({known})"


def test_honcho_accepts_the_procfile() -> None:
    checked = subprocess.run([HONCHO, "check"], cwd=ROOT, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
        HERALD_DATABASE_URL=DATABASE_URL,
        HERALD_JWT_SECRET=TEST_SECRET,
        **extra,
    )
    return env


@pytest.mark.integration
def test_honcho_runs_the_release_step(tmp_path: Path) -> None:
    done = subprocess.run(
        [HONCHO, "-f", str(ROOT / "Procfile"), "-d", str(tmp_path), "start", "release"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(head)" in done.stdout


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.mark.integration
def test_honcho_starts_web_worker_and_scheduler(tmp_path: Path, own_redis: OwnRedis) -> None:
    port = free_port()
    start = ["start", "-p", str(port), "web", "worker", "scheduler"]
    proc = subprocess.Popen(
        [HONCHO, "-f", str(ROOT / "Procfile"), "-d", str(tmp_path), *start],
        env=_env(HERALD_REDIS_URL=own_redis.url, HERALD_WORKER_HEARTBEAT_S="0.5"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # web's own "ready" line, through honcho's prefix
            lines.append(line)
            if "herald: ready on" in line:
                break
        else:
            raise AssertionError("web did not start:\n" + "".join(lines))
        children = psutil.Process(proc.pid).children(recursive=True)
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            while True:  # each poll is a probe; the first heartbeats of both end it
                report = http.get("/readiness").json()
                checks = report["checks"]
                if checks["workers"]["status"] == checks["scheduler"]["status"] == "ok":
                    break
                assert time.monotonic() < deadline, report
        assert report["status"] == "ready", report
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert not [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert "Traceback" not in "".join(lines) + out

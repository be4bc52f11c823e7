"""Finding the running ``herald serve``: ``runtime.json`` in the data folder, with the
environment's URLs always winning and a clear error when nothing runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from herald.journal.runtime.discovery import (
    RUNTIME_FILE,
    NotRunning,
    Runtime,
    find_runtime,
    local_url,
    remove_runtime,
    resolve_api_url,
    resolve_services,
    write_runtime,
)
from herald.journal.runtime.settings import Settings

RUNNING = Runtime(
    api_url="http://127.0.0.1:8123",
    redis_url="unix:///data/redis.sock",
    database_url="postgresql+psycopg://postgres@/herald?host=/data/pg",
    pid=os.getpid(),
)


def _settings(data_dir: Path, **values: object) -> Settings:
    return Settings(data_dir=data_dir, **values)  # type: ignore[arg-type]


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(proc.stdout)


def test_a_written_runtime_is_found_again(tmp_path: Path):
    path = write_runtime(tmp_path, RUNNING)
    assert path == tmp_path / RUNTIME_FILE and oct(path.stat().st_mode & 0o777) == "0o600"
    assert find_runtime(tmp_path) == RUNNING


def test_no_runtime_file_says_what_to_do(tmp_path: Path):
    with pytest.raises(NotRunning) as e:
        find_runtime(tmp_path / ".herald")
    text = str(e.value)
    assert "no running `herald serve`" in text and str(tmp_path / ".herald" / RUNTIME_FILE) in text
    assert "HERALD_DATA_DIR" in text and "HERALD_REDIS_URL" in text


def test_a_killed_server_is_not_running(tmp_path: Path):
    pid = _dead_pid()
    write_runtime(tmp_path, Runtime("http://127.0.0.1:1", "redis://x", "postgresql://x", pid))
    with pytest.raises(NotRunning, match=f"pid {pid}.*no longer running"):
        find_runtime(tmp_path)


def test_an_unreadable_runtime_file_is_not_running(tmp_path: Path):
    (tmp_path / RUNTIME_FILE).write_text("{not json")
    with pytest.raises(NotRunning, match="cannot read"):
        find_runtime(tmp_path)


def test_empty_urls_come_from_the_running_server(tmp_path: Path):
    write_runtime(tmp_path, RUNNING)
    found = resolve_services(_settings(tmp_path))
    assert (found.redis_url, found.database_url) == (RUNNING.redis_url, RUNNING.database_url)


def test_urls_from_the_environment_win(tmp_path: Path):
    write_runtime(tmp_path, RUNNING)
    mine = "redis://127.0.0.1:6390/0"
    partly = resolve_services(_settings(tmp_path, redis_url=mine))
    assert (partly.redis_url, partly.database_url) == (mine, RUNNING.database_url)
    # Both set: the runtime file is not even read (no server needed).
    both = _settings(tmp_path / "nowhere", redis_url=mine, database_url="postgresql://h/db")
    assert resolve_services(both) is both


def test_the_api_url_comes_from_public_url_then_the_runtime_then_host_and_port(tmp_path: Path):
    write_runtime(tmp_path, RUNNING)
    public = _settings(tmp_path, public_url="https://events.example.com/")
    assert resolve_api_url(public) == "https://events.example.com"
    assert resolve_api_url(_settings(tmp_path)) == RUNNING.api_url
    configured = _settings(
        tmp_path / "nowhere", redis_url="redis://r", database_url="postgresql://h/db", port=9001
    )
    assert resolve_api_url(configured) == "http://127.0.0.1:9001"
    with pytest.raises(NotRunning):
        resolve_api_url(_settings(tmp_path / "nowhere"))


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:80"),
        ("0.0.0.0", "http://127.0.0.1:80"),
        ("::", "http://[::1]:80"),
        ("::1", "http://[::1]:80"),
        ("localhost", "http://localhost:80"),
    ],
)
def test_a_wildcard_listen_address_is_reached_on_loopback(host: str, url: str):
    assert local_url(host, 80) == url


def test_a_server_removes_only_its_own_runtime_file(tmp_path: Path):
    write_runtime(tmp_path, RUNNING)
    remove_runtime(tmp_path, RUNNING.pid + 1)  # an older server exiting late
    assert (tmp_path / RUNTIME_FILE).exists()
    remove_runtime(tmp_path, RUNNING.pid)
    assert not (tmp_path / RUNTIME_FILE).exists()
    remove_runtime(tmp_path, RUNNING.pid)  # already gone: nothing to do

"""How a client finds the running ``herald serve``: ``DATA_DIR/runtime.json``.

On the embedded default ``herald serve`` writes this file once its Redis and
PostgreSQL are up and removes it on the way out. Every other process on the
machine that works in the same folder — ``herald publish``, ``tail``,
``demo-chat``, a user's script through ``herald.connect()`` — reads it to reach
the same servers and API. Settings from the environment always win over it, so
``HERALD_REDIS_URL`` / ``HERALD_DATABASE_URL`` / ``HERALD_PUBLIC_URL`` point a
client anywhere else.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from herald.journal.runtime.settings import Settings

__all__ = [
    "RUNTIME_FILE",
    "NotRunning",
    "Runtime",
    "find_runtime",
    "local_url",
    "remove_runtime",
    "resolve_api_url",
    "resolve_services",
    "write_runtime",
]

RUNTIME_FILE = "runtime.json"

_WHERE = (
    "start `herald serve` here, run this from the folder it runs in (or set "
    "HERALD_DATA_DIR to its data folder), or set HERALD_REDIS_URL and HERALD_DATABASE_URL"
)


class NotRunning(Exception):
    """No running ``herald serve`` was found and no URL says where to go instead;
    the message says what was looked for and how to fix it."""

    code = "not_running"


@dataclass(frozen=True, slots=True)
class Runtime:
    """Where one running ``herald serve`` can be reached."""

    api_url: str
    redis_url: str
    database_url: str
    pid: int


def local_url(host: str, port: int) -> str:
    """An address a client on this machine can connect to; a wildcard listen
    address (``0.0.0.0``, ``::``) is not one."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def write_runtime(data_dir: Path, runtime: Runtime) -> Path:
    """Write the file atomically (a reader never sees half of it); owner-only, since
    it says how to reach the servers."""
    path = data_dir / RUNTIME_FILE
    partial = path.with_name(f".{RUNTIME_FILE}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(asdict(runtime), f)
    partial.replace(path)
    return path


def remove_runtime(data_dir: Path, pid: int) -> None:
    """Remove the file if it is still ``pid``'s (a newer server may have replaced it)."""
    path = data_dir / RUNTIME_FILE
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def find_runtime(data_dir: Path) -> Runtime:
    """The server that runs on ``data_dir``; raises ``NotRunning`` when the file is
    missing or unreadable, or its process is gone (a server that was killed)."""
    path = data_dir.resolve() / RUNTIME_FILE
    try:
        raw = json.loads(path.read_text())
        runtime = Runtime(
            api_url=str(raw["api_url"]),
            redis_url=str(raw["redis_url"]),
            database_url=str(raw["database_url"]),
            pid=int(raw["pid"]),
        )
    except FileNotFoundError:
        raise NotRunning(
            f"no running `herald serve` found: {path} does not exist; {_WHERE}"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise NotRunning(f"cannot read {path} ({e}); {_WHERE}") from e
    if not psutil.pid_exists(runtime.pid):
        raise NotRunning(
            f"`herald serve` (pid {runtime.pid}, named in {path}) is no longer running; {_WHERE}"
        )
    return runtime


def resolve_services(settings: Settings) -> Settings:
    """``settings`` with an empty Redis or PostgreSQL URL taken from the running
    server; raises ``NotRunning`` when one is empty and no server runs."""
    if not settings.embedded:
        return settings
    runtime = find_runtime(settings.data_dir)
    return settings.model_copy(
        update={
            "redis_url": settings.redis_url or runtime.redis_url,
            "database_url": settings.database_url or runtime.database_url,
        }
    )


def resolve_api_url(settings: Settings) -> str:
    """The API's base URL (no trailing slash): ``HERALD_PUBLIC_URL``, else the
    running embedded server's, else ``HERALD_HOST:HERALD_PORT`` when Redis and
    PostgreSQL URLs are set (a server of those writes no runtime file)."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    if settings.embedded:
        return find_runtime(settings.data_dir).api_url.rstrip("/")
    return local_url(settings.host, settings.port)

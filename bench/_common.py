"""Helpers the bench scripts share: the machine description, percentiles, finding
the ``herald`` command and deleting a run's Redis keys.

Used by ``bench/journal.py``, ``bench/publish.py``, ``bench/replay.py`` and
``bench/tasks.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

__all__ = [
    "add_service_args",
    "cpu_model",
    "delete_keys",
    "delete_prefix",
    "herald_command",
    "machine_basics",
    "percentile",
    "redis_versions",
]


def add_service_args(p: argparse.ArgumentParser) -> None:
    """``--redis-url`` and ``--database-url``, defaulting to ``$HERALD_BENCH_REDIS_URL``
    and ``$HERALD_BENCH_DATABASE_URL``, else the local servers."""
    p.add_argument(
        "--redis-url", default=os.environ.get("HERALD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    p.add_argument(
        "--database-url",
        default=os.environ.get(
            "HERALD_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The value at fraction ``q`` (0 to 1) of the sorted values, rounded to a rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_basics() -> dict[str, Any]:
    """The first fields of every report's ``machine``: CPUs, CPU model, Python."""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
    }


def redis_versions(server: dict[str, Any]) -> dict[str, Any]:
    """redis-py, whether it parses with hiredis, and the server's version (from
    ``INFO server``)."""
    return {
        "redis_py": redis.__version__,
        "hiredis": redis.utils.HIREDIS_AVAILABLE,
        "redis_version": server.get("redis_version"),
    }


def herald_command() -> str:
    # Next to this interpreter first, so a venv's herald wins over another on PATH.
    beside = Path(sys.executable).with_name("herald")
    if beside.exists():
        return str(beside)
    found = shutil.which("herald")
    if found is None:
        raise SystemExit("cannot find the `herald` command; run `pip install -e .` first")
    return found


async def delete_keys(client: aioredis.Redis, keys: Iterable[Any]) -> None:
    # DEL (not UNLINK): freeing happens now, outside the timed sections, instead of
    # in Redis's background thread competing for CPU with the next mode.
    batch = list(keys)
    for start in range(0, len(batch), 500):
        await client.delete(*batch[start : start + 500])


async def delete_prefix(client: aioredis.Redis, prefix: str) -> None:
    """Safety net at the end: anything under the run's prefix that the bookkeeping
    missed, whoever wrote it."""
    found = [k async for k in client.scan_iter(match=f"*{prefix}-*", count=1000)]
    await delete_keys(client, found)

"""Redis key names of the task queue.

One queue's keys share the hash tag ``{q:<queue>}``, so every move between them is
one atomic Lua script (``lua/*.lua``), also in Redis Cluster::

    herald:{q:<queue>}:tasks   stream of unfinished tasks (entries are deleted when
                               acknowledged, so the stream is the backlog)
    herald:{q:<queue>}:retry   sorted set of failed attempts waiting for their backoff
    herald:{q:<queue>}:dead    stream of tasks that failed for good
    herald:{task:<id>}:status  hash: the task's owner, status and final outcome (TTL)
    herald:workers             hash: worker id -> last heartbeat, unix ms

The strings are stored data: changing one orphans queued tasks.
"""

from __future__ import annotations

from typing import Final

__all__ = ["WORKERS_KEY", "dead_key", "retry_key", "status_key", "tasks_key"]

WORKERS_KEY: Final = "herald:workers"  # readiness reads this hash: worker id -> unix ms


def tasks_key(queue: str) -> str:
    return f"herald:{{q:{queue}}}:tasks"


def retry_key(queue: str) -> str:
    return f"herald:{{q:{queue}}}:retry"


def dead_key(queue: str) -> str:
    return f"herald:{{q:{queue}}}:dead"


def status_key(task_id: str) -> str:
    return f"herald:{{task:{task_id}}}:status"

"""The task queue's values: errors, the entry codec, the status record.
Re-exported by ``herald.journal.tasks.queue``; the Redis keys are in
``herald.journal.tasks.keys``."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from herald.journal.envelope import format_time

__all__ = [
    "FINAL",
    "GROUP",
    "KIND_RE",
    "MAX_TASK_BYTES",
    "OUTCOME_FIELDS",
    "InvalidTask",
    "QueuedTask",
    "StatusUpdate",
    "TaskQueueError",
    "TaskQueueUnavailable",
    "TaskTooLarge",
    "as_text",
    "dead_view",
    "iso_time",
    "now_ms",
    "public_status",
]

GROUP: Final = "workers"  # the one consumer group of every queue
# A kind (and an events prefix) is an event type without its last part.
KIND_RE: Final = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
# Payload + context of one task.  Large inputs belong in the database or a file;
# the task carries a reference to them.
MAX_TASK_BYTES: Final = 1024 * 1024
FINAL = frozenset({"completed", "failed"})
# Status fields that belong to one attempt's outcome; cleared on each update.
OUTCOME_FIELDS = ("result", "error", "next_attempt_at", "finished_at")


class TaskQueueError(Exception):
    code = "task_queue_error"


class InvalidTask(TaskQueueError, ValueError):
    """The kind, owner, queue, id or payload cannot be enqueued; nothing was."""

    code = "invalid_task"


class TaskTooLarge(InvalidTask):
    code = "task_too_large"


class TaskQueueUnavailable(TaskQueueError):
    """Redis did not answer.  Raised by ``enqueue`` before anything was queued, or
    after the ``queued`` event when adding the task failed (a ``failed`` event with
    code ``enqueue_failed`` then follows it, if Redis lets it through)."""

    code = "queue_unavailable"


def now_ms() -> int:
    return int(time.time() * 1000)


def iso_time(ms: int) -> str:
    """Unix ms as RFC 3339 UTC with a ``Z``."""
    return format_time(datetime.fromtimestamp(ms / 1000, UTC))


def as_text(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    return raw.decode() if isinstance(raw, bytes) else raw


@dataclass(frozen=True, slots=True)
class QueuedTask:
    """One task as it travels in a stream entry (every field a string)."""

    task_id: str
    kind: str
    owner: str
    queue: str
    payload: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1  # the attempt this entry starts; a reclaim adds deliveries on top
    max_attempts: int | None = None  # None: the kind's, else HERALD_TASK_MAX_ATTEMPTS
    events: str = ""  # "": the worker uses the kind's events prefix, else the kind
    publish_queued: bool = True
    enqueued_ms: int = 0

    def fields(self) -> dict[str, str | bytes]:
        return {
            "id": self.task_id,
            "kind": self.kind,
            "owner": self.owner,
            "payload": orjson.dumps(self.payload),
            "context": orjson.dumps(self.context),
            "attempt": str(self.attempt),
            "max": "" if self.max_attempts is None else str(self.max_attempts),
            "events": self.events,
            "pq": "1" if self.publish_queued else "0",
            "enq": str(self.enqueued_ms),
        }

    def flat(self) -> list[str]:
        """The fields as [name, value, ...] text, for scripts that XADD them."""
        out: list[str] = []
        for k, v in self.fields().items():
            out += (k, as_text(v))
        return out

    @classmethod
    def from_fields(cls, queue: str, raw: dict[Any, Any]) -> QueuedTask:
        """Parse an entry; raises ``InvalidTask`` for one no Herald producer wrote."""
        f = {as_text(k): v for k, v in raw.items()}
        try:
            payload = orjson.loads(f["payload"])
            context = orjson.loads(f.get("context", b"{}"))
            max_text = as_text(f.get("max"))
            task = cls(
                task_id=as_text(f["id"]),
                kind=as_text(f["kind"]),
                owner=as_text(f["owner"]),
                queue=queue,
                payload=payload,
                context=context,
                attempt=int(as_text(f.get("attempt")) or 1),
                max_attempts=int(max_text) if max_text else None,
                events=as_text(f.get("events")),
                publish_queued=as_text(f.get("pq")) != "0",
                enqueued_ms=int(as_text(f.get("enq")) or 0),
            )
        except (KeyError, ValueError, orjson.JSONDecodeError) as e:
            raise InvalidTask(f"malformed task entry: {e}") from e
        if not isinstance(payload, dict) or not isinstance(context, dict):
            raise InvalidTask("malformed task entry: payload and context must be objects")
        return task


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A step of a task for its status record; ``result`` / ``error`` become JSON."""

    task_id: str
    status: str
    values: dict[str, Any] = field(default_factory=dict)
    # Delete the outcome fields of earlier steps this update does not set.  Needless
    # on a task's first delivery: enqueue left none behind.
    clean: bool = True

    def record(self) -> dict[str, str]:
        out = {"status": self.status, "updated_at": iso_time(now_ms())}
        for k, v in self.values.items():
            out[k] = orjson.dumps(v).decode() if k in ("result", "error") else str(v)
        return out


def public_status(record: dict[str, str]) -> dict[str, Any]:
    """The status hash as API responses show it (no internal fields)."""
    out: dict[str, Any] = {
        "task_id": record.get("task_id", ""),
        "kind": record.get("kind", ""),
        "user": record.get("owner", ""),
        "queue": record.get("queue", ""),
        "status": record.get("status", ""),
        "attempt": int(record.get("attempt") or 0),
    }
    for name in ("result", "error"):
        if record.get(name):
            out[name] = orjson.loads(record[name])
    for name in ("queued_at", "started_at", "next_attempt_at", "finished_at", "updated_at"):
        if record.get(name):
            out[name] = record[name]
    return out


def dead_view(queue: str, entry_id: str, raw: dict[Any, Any]) -> dict[str, Any]:
    f = {as_text(k): as_text(v) for k, v in raw.items()}
    failed_ms = int(f.get("failed_at") or 0)
    try:
        payload = orjson.loads(f.get("payload") or "{}")
    except orjson.JSONDecodeError:
        payload = None
    return {
        "task_id": f.get("id", ""),
        "kind": f.get("kind", ""),
        "user": f.get("owner", ""),
        "queue": queue,
        "attempts": int(f.get("attempt") or 0),
        "error": {"code": f.get("code", ""), "message": f.get("message", "")},
        "failed_at": iso_time(failed_ms) if failed_ms else None,
        "payload": payload,
        "entry": entry_id,
    }

"""``POST /api/tasks`` (enqueue any task kind) and ``GET /api/tasks/{id}`` (its status).

The API cannot see the workers' registry (``api`` never imports ``workers``), so
any kind shaped like an event type is accepted; a kind no worker knows fails on
the worker with code ``unknown_task`` (a ``<kind>.failed`` event, then the
dead-letter stream, from where ``herald tasks retry`` can re-queue it once a
worker knows the kind).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from herald.api.auth import require_role
from herald.api.errors import ApiError
from herald.api.openapi import OBJECT, endpoint
from herald.api.responses import JSONResponse
from herald.api.schemas import parse_body, read_json
from herald.api.state import AppState, state_of
from herald.journal.base import JournalUnavailable
from herald.journal.envelope import EnvelopeTooLarge, InvalidEnvelope
from herald.journal.positions import NAME_RE
from herald.journal.tasks.queue import (
    KIND_RE,
    MAX_TASK_BYTES,
    InvalidTask,
    TaskQueue,
    TaskQueueUnavailable,
    TaskTooLarge,
)

__all__ = ["TaskBody", "routes"]


class TaskBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    kind: str = Field(pattern=KIND_RE.pattern, max_length=200)
    payload: dict[str, Any] = Field(default_factory=dict)
    user: str | None = Field(None, pattern=NAME_RE.pattern)
    context: dict[str, Any] = Field(default_factory=dict)
    queue: str = Field("default", pattern=NAME_RE.pattern)
    max_attempts: int | None = Field(None, ge=1, le=100)
    events: str = Field("", pattern=f"^$|{KIND_RE.pattern}", max_length=200)


def _queue(state: AppState) -> TaskQueue:
    if state.tasks is None:
        raise ApiError(
            503, "tasks_unavailable", "background tasks need Redis; this server runs without it"
        )
    return state.tasks


@endpoint(
    "Queue a task (roles admin, service)",
    {202: OBJECT},
    body=TaskBody,
    errors=(
        "role_missing",
        "task_too_large",
        "envelope_too_large",
        "invalid_task",
        "invalid_envelope",
        "queue_unavailable",
        "tasks_unavailable",
    ),
    tags=("tasks",),
)
async def enqueue(request: Request) -> Response:
    """Queue a task (roles admin or service) → ``202 {"task_id", "status_url"}``.

    The owner — whose stream gets the lifecycle events — is the caller, or ``user``.
    """
    state = state_of(request)
    principal = await state.principal(request)
    require_role(principal, "admin", "service")
    tasks = _queue(state)
    raw = await read_json(request, limit=MAX_TASK_BYTES + 4096)
    body = parse_body(TaskBody, raw)
    try:
        task_id = await tasks.enqueue(
            body.kind,
            body.user or principal.user,
            body.payload,
            context=body.context,
            queue=body.queue,
            max_attempts=body.max_attempts,
            events=body.events,
        )
    except TaskTooLarge as e:
        raise ApiError(413, e.code, str(e)) from e
    except EnvelopeTooLarge as e:
        raise ApiError(413, e.code, f"the queued event would be too large: {e}") from e
    except (InvalidTask, InvalidEnvelope) as e:
        raise ApiError(422, e.code, str(e)) from e
    except (TaskQueueUnavailable, JournalUnavailable, RedisError, OSError) as e:
        raise ApiError(503, "queue_unavailable", "the task queue is unavailable; retry") from e
    return JSONResponse(
        {"task_id": task_id, "status_url": f"/api/tasks/{task_id}"}, status_code=202
    )


@endpoint(
    "A task's state, for its owner or an admin",
    {200: OBJECT},
    errors=("not_found", "queue_unavailable", "tasks_unavailable"),
    tags=("tasks",),
)
async def task_status(request: Request) -> Response:
    """The task's status and, once final, its result or error.  The owner and admins
    may look; anyone else gets the same 404 as for an unknown task."""
    state = state_of(request)
    principal = await state.principal(request)
    tasks = _queue(state)
    task_id = request.path_params["task_id"]
    try:
        found = await tasks.status(task_id)
    except (RedisError, OSError) as e:
        raise ApiError(503, "queue_unavailable", "the task queue is unavailable; retry") from e
    if found is None or (found["user"] != principal.user and not principal.has_any_role("admin")):
        raise ApiError(404, "not_found", f"no task {task_id!r}")
    return JSONResponse(found)


routes = [
    Route("/api/tasks", enqueue, methods=["POST"]),
    Route("/api/tasks/{task_id}", task_status, methods=["GET"]),
]

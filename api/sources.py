"""Source routes: upload a file or register a connector directory, re-ingest,
re-sync, and read a source's state.

Creating work answers ``202 {"task_id", "source_id"}`` at once; the worker then
publishes ``source.ingest.queued`` → ``.progress`` … → ``.completed`` |
``.failed`` to the owner's stream with ``source_id`` and ``operation``
(``upload``, ``connector`` or ``reingest``).  A source is visible to its owner
only: another user's id and an unknown id get the same 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from herald.api.auth import AuthError
from herald.api.errors import ApiError
from herald.api.openapi import OBJECT, UPLOAD, UPLOAD_ERRORS, UUID_PATH, endpoint
from herald.api.responses import JSONResponse
from herald.api.schemas import parse_body, read_json
from herald.api.state import state_of
from herald.api.uploads import clean_text, parse_id, read_upload, require_workers
from herald.journal.base import JournalUnavailable
from herald.journal.envelope import format_time
from herald.journal.runtime.db import DatabaseUnavailable, run_in_transaction
from herald.journal.tables import source_files, sources
from herald.journal.tasks.queue import TaskQueue, TaskQueueUnavailable

__all__ = [
    "INGEST_KIND",
    "database_errors_as_503",
    "enqueue_or_503",
    "load_or_404",
    "routes",
]

INGEST_KIND = "source.ingest"
MAX_FILES_LISTED = 1000  # GET lists at most this many files; file_count has the total
_NOT_FOUND = ApiError(404, "source_not_found", "no source with this id")


class ConnectorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    path: str = Field(min_length=1, max_length=4096)


class ConnectorBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    connector: ConnectorSpec
    name: str | None = Field(None, min_length=1, max_length=255)


@contextlib.asynccontextmanager
async def database_errors_as_503() -> AsyncIterator[None]:
    try:
        yield
    except DatabaseUnavailable as e:
        raise ApiError(503, e.code, "the database is unavailable; retry shortly") from e
    except PoolTimeout as e:
        # Every pooled connection stayed busy for HERALD_DB_POOL_TIMEOUT_S.
        raise ApiError(503, "database_busy", "the database is busy; retry shortly") from e


async def load_or_404(
    engine: AsyncEngine,
    load: Callable[[AsyncConnection], Awaitable[dict[str, Any] | None]],
    not_found: ApiError,
) -> Response:
    """What ``load`` finds in one transaction as JSON, or ``not_found`` when it finds
    nothing; the database failing is a 503."""
    async with database_errors_as_503():
        body = await run_in_transaction(engine, load)
    if body is None:
        raise not_found
    return JSONResponse(body)


async def enqueue_or_503(tasks: TaskQueue, kind: str, owner: str, context: dict[str, Any]) -> str:
    """Queue a task whose payload is its context; Redis failing is a 503."""
    try:
        return await tasks.enqueue(kind, owner, dict(context), context=dict(context))
    except (TaskQueueUnavailable, JournalUnavailable, RedisError, OSError) as e:
        raise ApiError(
            503, "tasks_unavailable", "the task queue is unavailable; retry shortly"
        ) from e


# What the routes of one source may answer besides 401.
_SOURCE_ERRORS = ("source_not_found", "database_unavailable", "database_busy", "tasks_unavailable")


@endpoint(
    "Upload a file (multipart) or register a connector directory (JSON)",
    {202: OBJECT},
    body=ConnectorBody,
    body_media=UPLOAD,
    errors=(
        *UPLOAD_ERRORS,
        "connectors_disabled",
        "connector_path_forbidden",
        "invalid_connector_path",
        "connector_path_not_directory",
        "source_not_found",
        "database_unavailable",
        "database_busy",
        "tasks_unavailable",
    ),
    tags=("sources",),
)
async def create_source(request: Request) -> Response:
    """``multipart/form-data`` with field ``file`` (and optional ``name``) uploads a
    file; JSON ``{"connector": {"path"}, "name"?}`` registers a directory."""
    state = state_of(request)
    principal = await state.principal(request)
    engine, tasks = require_workers(state)
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media == "multipart/form-data":
        operation, source_id = "upload", await _upload(request, engine, principal.user)
    elif media == "application/json":
        operation, source_id = "connector", await _connector(request, engine, principal.user)
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            "send multipart/form-data with a 'file' field, or JSON with a 'connector'",
        )
    return await _queue_new(engine, tasks, principal.user, source_id, operation)


async def _upload(request: Request, engine: AsyncEngine, user: str) -> uuid.UUID:
    state = state_of(request)
    upload = await read_upload(request, state.settings.ingest_max_upload_bytes)
    name = clean_text(upload.fields.get("name", "")) or upload.filename
    source_id = uuid.uuid4()

    async def work(conn: AsyncConnection) -> None:
        await conn.execute(
            insert(sources).values(id=source_id, user_id=user, name=name, kind="upload")
        )
        await conn.execute(
            insert(source_files).values(
                source_id=source_id,
                path=upload.filename,
                content_type=upload.content_type,
                sha256=hashlib.sha256(upload.data).hexdigest(),
                size_bytes=len(upload.data),
                content=upload.data,
            )
        )

    async with database_errors_as_503():
        await run_in_transaction(engine, work)
    return source_id


async def _connector(request: Request, engine: AsyncEngine, user: str) -> uuid.UUID:
    state = state_of(request)
    body = parse_body(ConnectorBody, await read_json(request, limit=64 * 1024))
    roots = state.settings.connector_roots
    if not roots:
        raise AuthError(
            403, "connectors_disabled", "HERALD_CONNECTOR_ROOTS is empty on this server"
        )
    directory = await asyncio.to_thread(_check_directory, body.connector.path, roots)
    source_id = uuid.uuid4()
    name = clean_text(body.name or "") or directory.name or str(directory)

    async def work(conn: AsyncConnection) -> None:
        await conn.execute(
            insert(sources).values(
                id=source_id,
                user_id=user,
                name=name,
                kind="connector",
                location=str(directory),
            )
        )

    async with database_errors_as_503():
        await run_in_transaction(engine, work)
    return source_id


def _check_directory(raw: str, roots: list[str]) -> Path:
    path = Path(raw)
    if not path.is_absolute() or "\x00" in raw:
        raise ApiError(422, "invalid_connector_path", "connector.path must be an absolute path")
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop, an unreadable parent
        raise ApiError(422, "invalid_connector_path", f"{raw} cannot be resolved: {e}") from e
    if not any(resolved.is_relative_to(Path(r).resolve()) for r in roots if r):
        raise AuthError(
            403,
            "connector_path_forbidden",
            f"{raw} is not inside a directory listed in HERALD_CONNECTOR_ROOTS",
        )
    if not resolved.is_dir():
        raise ApiError(422, "connector_path_not_directory", f"{raw} is not a directory")
    return resolved


async def _queue_new(
    engine: AsyncEngine, tasks: TaskQueue, owner: str, source_id: uuid.UUID, operation: str
) -> Response:
    context = {"source_id": str(source_id), "operation": operation}
    try:
        task_id = await enqueue_or_503(tasks, INGEST_KIND, owner, context)
    except ApiError:
        # Nothing will ever ingest it: do not leave a source stuck in "queued".
        async def undo(conn: AsyncConnection) -> None:
            await conn.execute(delete(sources).where(sources.c.id == source_id))

        with contextlib.suppress(DatabaseUnavailable):
            await run_in_transaction(engine, undo)
        raise
    return _accepted(task_id, source_id)


def _accepted(task_id: str, source_id: uuid.UUID) -> Response:
    return JSONResponse(
        {"task_id": task_id, "source_id": str(source_id)},
        status_code=202,
        headers={"Location": f"/api/sources/{source_id}"},
    )


@endpoint(
    "Ingest a source again",
    {202: OBJECT},
    path={"source_id": UUID_PATH},
    errors=_SOURCE_ERRORS,
    tags=("sources",),
)
async def reingest(request: Request) -> Response:
    """Ingest a source again from scratch (stored bytes, or the whole directory)."""
    return await _requeue(request, "reingest", connectors_only=False)


@endpoint(
    "Re-read a connector's directory",
    {202: OBJECT},
    path={"source_id": UUID_PATH},
    errors=(
        "source_not_found",
        "database_unavailable",
        "database_busy",
        "tasks_unavailable",
        "not_a_connector",
        "connectors_disabled",
        "connector_path_forbidden",
    ),
    tags=("sources",),
)
async def sync(request: Request) -> Response:
    """Bring a connector source up to date with its directory."""
    return await _requeue(request, "connector", connectors_only=True)


async def _requeue(request: Request, operation: str, *, connectors_only: bool) -> Response:
    state = state_of(request)
    principal = await state.principal(request)
    engine, tasks = require_workers(state)
    source_id = parse_id(request.path_params["source_id"], _NOT_FOUND)

    async def mark_queued(conn: AsyncConnection) -> tuple[str, str] | None:
        q = select(sources.c.kind, sources.c.status).where(
            sources.c.id == source_id, sources.c.user_id == principal.user
        )
        row = (await conn.execute(q.with_for_update())).first()
        if row is None:
            return None
        if connectors_only and row.kind != "connector":
            return (row.kind, row.status)
        await conn.execute(
            update(sources)
            .where(sources.c.id == source_id)
            .values(status="queued", updated_at=func.now())
        )
        return (row.kind, row.status)

    async with database_errors_as_503():
        found = await run_in_transaction(engine, mark_queued)
    if found is None:
        raise _NOT_FOUND
    kind, previous = found
    if connectors_only and kind != "connector":
        raise ApiError(
            409, "not_a_connector", "only a connector source can be synced; use /reingest"
        )
    context = {"source_id": str(source_id), "operation": operation}
    try:
        task_id = await enqueue_or_503(tasks, INGEST_KIND, principal.user, context)
    except ApiError:

        async def restore(conn: AsyncConnection) -> None:
            await conn.execute(
                update(sources)
                .where(sources.c.id == source_id, sources.c.status == "queued")
                .values(status=previous)
            )

        with contextlib.suppress(DatabaseUnavailable):
            await run_in_transaction(engine, restore)
        raise
    return _accepted(task_id, source_id)


@endpoint(
    "A source's state and files",
    {200: OBJECT},
    path={"source_id": UUID_PATH},
    errors=_SOURCE_ERRORS,
    tags=("sources",),
)
async def get_source(request: Request) -> Response:
    """The source, its totals and its files (``limited`` when the token cap cut it)."""
    state = state_of(request)
    principal = await state.principal(request)
    engine, _ = require_workers(state)
    source_id = parse_id(request.path_params["source_id"], _NOT_FOUND)

    async def load(conn: AsyncConnection) -> dict[str, Any] | None:
        row = (
            await conn.execute(
                select(sources).where(
                    sources.c.id == source_id, sources.c.user_id == principal.user
                )
            )
        ).first()
        if row is None:
            return None
        f = source_files.c
        files = (
            await conn.execute(
                select(f.path, f.content_type, f.size_bytes, f.sha256, f.updated_at)
                .where(f.source_id == source_id)
                .order_by(f.path)
                .limit(MAX_FILES_LISTED + 1)
            )
        ).all()
        count = await conn.execute(select(func.count()).where(f.source_id == source_id))
        return {
            "id": str(row.id),
            "name": row.name,
            "kind": row.kind,
            "location": row.location,
            "status": row.status,
            "error": row.error,
            "chunk_count": row.chunk_count,
            "token_count": row.token_count,
            "limited": row.limited,
            "files": [
                {
                    "path": x.path,
                    "content_type": x.content_type,
                    "size_bytes": x.size_bytes,
                    "sha256": x.sha256,
                    "updated_at": format_time(x.updated_at),
                }
                for x in files[:MAX_FILES_LISTED]
            ],
            "file_count": count.scalar_one(),
            "created_at": format_time(row.created_at),
            "updated_at": format_time(row.updated_at),
        }

    return await load_or_404(engine, load, _NOT_FOUND)


routes = [
    Route("/api/sources", create_source, methods=["POST"]),
    Route("/api/sources/{source_id}", get_source, methods=["GET"]),
    Route("/api/sources/{source_id}/reingest", reingest, methods=["POST"]),
    Route("/api/sources/{source_id}/sync", sync, methods=["POST"]),
]

"""Attachment routes: upload one file for text extraction, and read the result.

``POST /api/attachments`` answers ``202 {"task_id", "attachment_id"}``; the worker
publishes ``attachment.queued`` → ``.progress`` → ``.completed`` | ``.failed``
with ``attachment_id`` to the owner's stream.  ``GET /api/attachments/{id}``
returns the status and, once ``ready``, the text.  Another user's attachment and
an unknown id get the same 404.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from herald.api.errors import ApiError
from herald.api.openapi import OBJECT, UPLOAD, UPLOAD_ERRORS, UUID_PATH, endpoint
from herald.api.responses import JSONResponse
from herald.api.sources import database_errors_as_503, enqueue_or_503, load_or_404
from herald.api.state import state_of
from herald.api.uploads import parse_id, read_upload, require_workers
from herald.journal.envelope import format_time
from herald.journal.runtime.db import DatabaseUnavailable, run_in_transaction
from herald.journal.tables import attachments

__all__ = ["ATTACHMENT_KIND", "routes"]

ATTACHMENT_KIND = "attachment"
_NOT_FOUND = ApiError(404, "attachment_not_found", "no attachment with this id")


@endpoint(
    "Upload an attachment (multipart field 'file')",
    {202: OBJECT},
    body_media=UPLOAD,
    errors=(*UPLOAD_ERRORS, "database_unavailable", "database_busy", "tasks_unavailable"),
    tags=("sources",),
)
async def create_attachment(request: Request) -> Response:
    """``multipart/form-data`` with field ``file``: store it and queue its extraction."""
    state = state_of(request)
    principal = await state.principal(request)
    engine, tasks = require_workers(state)
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "multipart/form-data":
        raise ApiError(
            415, "unsupported_media_type", "send multipart/form-data with a 'file' field"
        )
    upload = await read_upload(request, state.settings.ingest_max_upload_bytes)
    attachment_id = uuid.uuid4()

    async def work(conn: AsyncConnection) -> None:
        await conn.execute(
            insert(attachments).values(
                id=attachment_id,
                user_id=principal.user,
                filename=upload.filename,
                content_type=upload.content_type,
                size_bytes=len(upload.data),
                content=upload.data,
            )
        )

    async with database_errors_as_503():
        await run_in_transaction(engine, work)
    context = {"attachment_id": str(attachment_id)}
    try:
        task_id = await enqueue_or_503(tasks, ATTACHMENT_KIND, principal.user, context)
    except ApiError:
        # Nothing will ever process it: do not leave a row stuck in "queued".
        async def undo(conn: AsyncConnection) -> None:
            await conn.execute(delete(attachments).where(attachments.c.id == attachment_id))

        with contextlib.suppress(DatabaseUnavailable):
            await run_in_transaction(engine, undo)
        raise
    return JSONResponse(
        {"task_id": task_id, "attachment_id": str(attachment_id)},
        status_code=202,
        headers={"Location": f"/api/attachments/{attachment_id}"},
    )


@endpoint(
    "An attachment and its text",
    {200: OBJECT},
    path={"attachment_id": UUID_PATH},
    errors=("attachment_not_found", "database_unavailable", "database_busy"),
    tags=("sources",),
)
async def get_attachment(request: Request) -> Response:
    """Status, size and (once ``ready``) the extracted text of one attachment."""
    state = state_of(request)
    principal = await state.principal(request)
    engine, _ = require_workers(state)
    attachment_id = parse_id(request.path_params["attachment_id"], _NOT_FOUND)
    a = attachments.c

    async def load(conn: AsyncConnection) -> dict[str, Any] | None:
        row = (
            await conn.execute(
                select(
                    a.id,
                    a.filename,
                    a.content_type,
                    a.size_bytes,
                    a.status,
                    a.error,
                    a.text,
                    a.token_count,
                    a.created_at,
                    a.updated_at,
                ).where(a.id == attachment_id, a.user_id == principal.user)
            )
        ).first()
        if row is None:
            return None
        return {
            "id": str(row.id),
            "filename": row.filename,
            "content_type": row.content_type,
            "size_bytes": row.size_bytes,
            "status": row.status,
            "error": row.error,
            "token_count": row.token_count,
            "text": row.text,
            "created_at": format_time(row.created_at),
            "updated_at": format_time(row.updated_at),
        }

    return await load_or_404(engine, load, _NOT_FOUND)


routes = [
    Route("/api/attachments", create_attachment, methods=["POST"]),
    Route("/api/attachments/{attachment_id}", get_attachment, methods=["GET"]),
]

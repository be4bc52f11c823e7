"""Reading one uploaded file from a ``multipart/form-data`` body, with the cheap
checks done before anything is stored: size (413), emptiness (422) and extension
(415).  The worker does the real extraction and reports a file it cannot read
as a ``failed`` event.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from herald.api.errors import ApiError
from herald.api.state import AppState
from herald.journal.sources.formats import CONTENT_TYPES

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from herald.journal.tasks.queue import TaskQueue

__all__ = [
    "CONTENT_TYPES",
    "SUPPORTED_EXTENSIONS",
    "Upload",
    "clean_text",
    "parse_id",
    "read_upload",
    "require_workers",
]

# The formats the worker extracts (journal/formats.py); any other is refused with a 415.
SUPPORTED_EXTENSIONS = frozenset(CONTENT_TYPES)
# Room for the multipart boundaries, part headers and a short name field.
_ENVELOPE_SLACK = 16 * 1024


@dataclass(frozen=True, slots=True)
class Upload:
    filename: str
    content_type: str  # what Herald reads it as, from the extension
    data: bytes
    fields: dict[str, str]  # the form's text fields


def require_workers(state: AppState) -> tuple[AsyncEngine, TaskQueue]:
    """The database and the task queue, or a 503 saying which is missing."""
    if state.engine is None:
        raise ApiError(503, "database_unavailable", "no database is configured on this server")
    if state.tasks is None:
        raise ApiError(
            503, "tasks_unavailable", "background tasks need Redis; this server runs without it"
        )
    return state.engine, state.tasks


def parse_id(text: str, not_found: ApiError) -> uuid.UUID:
    """A path id, where a malformed one is as unknown as a missing one."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise not_found from None


def clean_text(raw: str, limit: int = 255) -> str:
    """A user-supplied name without control characters (PostgreSQL text cannot hold
    NUL), trimmed to ``limit`` characters."""
    return "".join(c for c in raw if c >= " " and c != "\x7f").strip()[:limit]


def _safe_filename(raw: str) -> str:
    # Browsers send a bare name, but some clients send a path (even a Windows one).
    return clean_text(PurePosixPath(raw.replace("\\", "/")).name)


async def read_upload(request: Request, limit: int) -> Upload:
    """The one file in field ``file`` of a multipart body, refusing more than
    ``limit`` bytes of file without buffering the rest of the body."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + _ENVELOPE_SLACK:
        raise _too_large(limit)

    async def bounded() -> AsyncGenerator[bytes, None]:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit + _ENVELOPE_SLACK:
                raise _too_large(limit)
            yield chunk

    parser = MultiPartParser(request.headers, bounded(), max_files=1, max_fields=10)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise ApiError(
            422, "invalid_multipart", f"the multipart body is invalid: {e.message}"
        ) from e
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise ApiError(422, "missing_file", "send the file in the multipart field 'file'")
        filename = _safe_filename(file.filename or "")
        if not filename:
            raise ApiError(422, "missing_filename", "the 'file' part needs a filename")
        ext = PurePosixPath(filename).suffix.lower()
        if ext not in SUPPORTED_EXTENSIONS:
            raise ApiError(
                415,
                "unsupported_file_type",
                f"{ext or 'a file without extension'} is not supported; "
                f"send one of {', '.join(sorted(SUPPORTED_EXTENSIONS))}",
            )
        if file.size is not None and file.size > limit:
            raise _too_large(limit)
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise _too_large(limit)
        if not data:
            raise ApiError(422, "empty_file", f"{filename} is empty")
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        return Upload(filename, CONTENT_TYPES[ext], data, fields)
    finally:
        await form.close()


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "file_too_large", f"the file is over {limit} bytes")

"""The ``source.ingest`` task: extract a source's files, cut them into chunks and
store the chunks in PostgreSQL.

Payload and context: ``{"source_id", "operation"}`` with operation ``upload``,
``reingest`` or ``connector``.  An uploaded source is read from the bytes kept in
``source_files.content``, so any worker process can run it; a connector source is
synced with its directory (workers/connector.py).  The ``completed`` result is
``{"source_id", "chunks", "tokens", "files", "limited"}`` (a connector adds its
sync counts).  An upload that cannot be read fails at once with the extractor's
code (``undecodable_text``, ``corrupt_file`` …); any final failure leaves the
source ``failed`` with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from herald.journal.runtime.db import run_in_transaction
from herald.journal.tables import source_files, sources
from herald.workers.chunkstore import finish, replace_chunks, require_engine
from herald.workers.connector import sync_connector
from herald.workers.extract import Chunk, ExtractError, ExtractLimits, extract_text, split
from herald.workers.task import TaskContext, TaskError, TaskRegistry

__all__ = ["KIND", "ingest_source", "register"]

KIND = "source.ingest"

log = logging.getLogger("herald.workers.ingest")


def register(registry: TaskRegistry) -> None:
    registry.task(KIND)(ingest_source)


async def ingest_source(ctx: TaskContext) -> dict[str, Any]:
    """Run one ingest; on a final failure the source is marked ``failed`` with the reason."""
    engine = require_engine(ctx)
    try:
        source_id = uuid.UUID(str(ctx.payload["source_id"]))
    except (KeyError, ValueError) as e:
        raise TaskError("bad_payload", "the task has no valid source_id", retry=False) from e
    # The task's owner must own the source: a service token may enqueue for any
    # user, and must not reach another user's source that way.
    source = await run_in_transaction(engine, lambda c: _start(c, source_id, ctx.owner))
    if source is None:
        raise TaskError("source_not_found", "the task's owner has no such source", retry=False)
    try:
        if source.kind == "connector":
            # A limited source may have room now, and a reingest means everything.
            full = ctx.payload.get("operation") == "reingest" or source.limited
            return await sync_connector(ctx, engine, source.id, source.location or "", full=full)
        return await _ingest_uploads(ctx, engine, source_id)
    except TaskError as e:
        if not e.retry or ctx.attempt >= ctx.settings.task_max_attempts:
            await _mark_failed(engine, source_id, e.message)
        raise
    except Exception:
        if ctx.attempt >= ctx.settings.task_max_attempts:
            await _mark_failed(engine, source_id, "an internal error stopped the ingest")
        raise


@dataclass(frozen=True, slots=True)
class _Source:
    id: uuid.UUID
    kind: str  # upload | connector
    location: str | None
    limited: bool


async def _start(conn: AsyncConnection, source_id: uuid.UUID, owner: str) -> _Source | None:
    row = (
        await conn.execute(
            update(sources)
            .where(sources.c.id == source_id, sources.c.user_id == owner)
            .values(status="ingesting", error=None, updated_at=func.now())
            .returning(sources.c.id, sources.c.kind, sources.c.location, sources.c.limited)
        )
    ).first()
    return None if row is None else _Source(row.id, row.kind, row.location, row.limited)


async def _mark_failed(engine: AsyncEngine, source_id: uuid.UUID, message: str) -> None:
    async def work(conn: AsyncConnection) -> None:
        await conn.execute(
            update(sources)
            .where(sources.c.id == source_id)
            .values(status="failed", error=message, updated_at=func.now())
        )

    try:
        await run_in_transaction(engine, work)
    except Exception:
        # The task's failure is still published; only the row keeps a stale status.
        log.exception("could not mark source %s failed", source_id)


async def _ingest_uploads(
    ctx: TaskContext, engine: AsyncEngine, source_id: uuid.UUID
) -> dict[str, Any]:
    async def load(conn: AsyncConnection) -> list[tuple[str, bytes]]:
        q = select(source_files.c.path, source_files.c.content).where(
            source_files.c.source_id == source_id
        )
        rows = await conn.execute(q.order_by(source_files.c.path))
        return [(path, bytes(content or b"")) for path, content in rows]

    files = await run_in_transaction(engine, load)
    budget = ctx.settings.ingest_max_tokens
    chars = ctx.settings.ingest_max_chars
    limits = ExtractLimits(**ctx.settings.extract_limits)
    limited = False
    plans: list[tuple[str, list[Chunk]]] = []
    for path, content in files:
        try:
            text = await asyncio.to_thread(extract_text, path, content, limits)
        except ExtractError as e:
            raise TaskError(e.code, e.message, retry=False) from e
        cut = split(text, ctx.settings.ingest_chunk_tokens, budget, max(0, chars))
        budget -= cut.tokens
        chars -= cut.chars
        limited = limited or cut.limited
        plans.append((path, cut.chunks))

    total = sum(len(c) for _, c in plans)
    written = 0
    for path, file_chunks in plans:
        base = written

        async def report(done: int, base: int = base) -> None:
            await ctx.progress(base + done, total)

        await replace_chunks(engine, source_id, path, file_chunks, report)
        written += len(file_chunks)
    return await finish(engine, source_id, limited)

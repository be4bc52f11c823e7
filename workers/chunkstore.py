"""Writing a source's chunks: each file's chunks replaced in one transaction,
and the source's totals recounted from what is stored.

Every write first locks the source row, so two runs on one source (a sync and a
re-ingest, say) cannot interleave inside a file, and a reader never sees half a
file's chunks.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from herald.journal.runtime.db import run_in_transaction
from herald.journal.tables import chunks, source_files, sources
from herald.workers.extract import Chunk
from herald.workers.task import TaskContext, TaskError

__all__ = ["INSERT_BATCH", "Progress", "finish", "remove_file", "replace_chunks", "require_engine"]

INSERT_BATCH = 200  # chunk rows per INSERT statement; progress is reported per batch

Progress = Callable[[int], Awaitable[None]]


def require_engine(ctx: TaskContext) -> AsyncEngine:
    if ctx.engine is None:
        raise TaskError(
            "database_unavailable", "this worker has no database configured", retry=False
        )
    return ctx.engine


async def replace_chunks(
    engine: AsyncEngine,
    source_id: uuid.UUID,
    path: str,
    file_chunks: list[Chunk],
    report: Progress | None = None,
    *,
    file_row: dict[str, Any] | None = None,
) -> None:
    """Replace one file's chunks (and upsert its ``source_files`` row when given) in
    one transaction.  ``report(done)`` follows each batch; a retried transaction
    reports only what it has not reported before, so progress never goes back."""
    reported = 0

    async def work(conn: AsyncConnection) -> None:
        nonlocal reported
        await conn.execute(select(sources.c.id).where(sources.c.id == source_id).with_for_update())
        await conn.execute(
            delete(chunks).where(chunks.c.source_id == source_id, chunks.c.path == path)
        )
        if file_row is not None:
            stmt = pg_insert(source_files).values(source_id=source_id, path=path, **file_row)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[source_files.c.source_id, source_files.c.path],
                    set_={**file_row, "updated_at": func.now()},
                )
            )
        for start in range(0, len(file_chunks), INSERT_BATCH):
            batch = file_chunks[start : start + INSERT_BATCH]
            rows = [
                {
                    "source_id": source_id,
                    "path": path,
                    "ordinal": c.ordinal,
                    "text": c.text,
                    "token_count": c.tokens,
                }
                for c in batch
            ]
            await conn.execute(insert(chunks), rows)
            done = start + len(batch)
            if report is not None and done > reported:
                reported = done
                await report(done)

    await run_in_transaction(engine, work)


async def remove_file(engine: AsyncEngine, source_id: uuid.UUID, path: str) -> None:
    """Forget one file of a source: its row and its chunks, together."""

    async def work(conn: AsyncConnection) -> None:
        await conn.execute(select(sources.c.id).where(sources.c.id == source_id).with_for_update())
        await conn.execute(
            delete(chunks).where(chunks.c.source_id == source_id, chunks.c.path == path)
        )
        await conn.execute(
            delete(source_files).where(
                source_files.c.source_id == source_id, source_files.c.path == path
            )
        )

    await run_in_transaction(engine, work)


async def finish(engine: AsyncEngine, source_id: uuid.UUID, limited: bool) -> dict[str, Any]:
    """Recount the source from its stored chunks, mark it ready, return the totals."""

    async def work(conn: AsyncConnection) -> dict[str, Any]:
        counted = (
            await conn.execute(
                select(func.count(), func.coalesce(func.sum(chunks.c.token_count), 0)).where(
                    chunks.c.source_id == source_id
                )
            )
        ).one()
        files = (
            await conn.execute(select(func.count()).where(source_files.c.source_id == source_id))
        ).scalar_one()
        await conn.execute(
            update(sources)
            .where(sources.c.id == source_id)
            .values(
                status="ready",
                error=None,
                chunk_count=counted[0],
                token_count=counted[1],
                limited=limited,
                updated_at=func.now(),
            )
        )
        return {
            "source_id": str(source_id),
            "chunks": int(counted[0]),
            "tokens": int(counted[1]),
            "files": int(files),
            "limited": limited,
        }

    return await run_in_transaction(engine, work)

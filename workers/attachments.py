"""The ``attachment`` task: extract the text of one uploaded attachment.

Payload and context: ``{"attachment_id"}``.  The bytes are read from
``attachments.content`` (so any worker can run it); the text, cut to
``HERALD_INGEST_MAX_TOKENS`` words, is stored back on the row with status
``ready``.  ``completed`` carries ``{"attachment_id", "tokens", "chars",
"limited"}``; a file that cannot be read fails at once with the extractor's
code (``undecodable_text``, ``corrupt_file`` …) and the row says ``failed``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from herald.journal.runtime.db import run_in_transaction
from herald.journal.tables import attachments
from herald.workers.chunkstore import require_engine
from herald.workers.extract import ExtractError, ExtractLimits, extract_text, split
from herald.workers.task import TaskContext, TaskError, TaskRegistry

__all__ = ["KIND", "extract_attachment", "register"]

KIND = "attachment"

log = logging.getLogger("herald.workers.attachments")


def register(registry: TaskRegistry) -> None:
    registry.task(KIND)(extract_attachment)


async def extract_attachment(ctx: TaskContext) -> dict[str, Any]:
    """Extract and store the text; on a final failure the row is marked ``failed``."""
    engine = require_engine(ctx)
    try:
        attachment_id = uuid.UUID(str(ctx.payload["attachment_id"]))
    except (KeyError, ValueError) as e:
        raise TaskError("bad_payload", "the task has no valid attachment_id", retry=False) from e

    async def start(conn: AsyncConnection) -> tuple[str, bytes] | None:
        row = (
            await conn.execute(
                update(attachments)
                # Only the task's owner's attachment (see ingest: service tokens).
                .where(attachments.c.id == attachment_id, attachments.c.user_id == ctx.owner)
                .values(status="processing", error=None, updated_at=func.now())
                .returning(attachments.c.filename, attachments.c.content)
            )
        ).first()
        return None if row is None else (row.filename, bytes(row.content))

    found = await run_in_transaction(engine, start)
    if found is None:
        raise TaskError(
            "attachment_not_found", "the task's owner has no such attachment", retry=False
        )
    filename, content = found
    try:
        limits = ExtractLimits(**ctx.settings.extract_limits)
        text = await asyncio.to_thread(extract_text, filename, content, limits)
    except ExtractError as e:
        await _mark_failed(engine, attachment_id, e.message)
        raise TaskError(e.code, e.message, retry=False) from e
    await ctx.progress(1, 2)
    # One chunk as large as the budget: the cut keeps the text's own spacing.
    budget = ctx.settings.ingest_max_tokens
    cut = split(text, budget, budget, ctx.settings.ingest_max_chars)
    kept = cut.chunks[0].text if cut.chunks else ""

    async def store(conn: AsyncConnection) -> None:
        await conn.execute(
            update(attachments)
            .where(attachments.c.id == attachment_id)
            .values(
                status="ready",
                text=kept,
                token_count=cut.tokens,
                error=None,
                updated_at=func.now(),
            )
        )

    try:
        await run_in_transaction(engine, store)
    except Exception:
        if ctx.attempt >= ctx.settings.task_max_attempts:
            await _mark_failed(engine, attachment_id, "an internal error stopped the extraction")
        raise
    await ctx.progress(2, 2)
    return {
        "attachment_id": str(attachment_id),
        "tokens": cut.tokens,
        "chars": len(kept),
        "limited": cut.limited,
    }


async def _mark_failed(engine: AsyncEngine, attachment_id: uuid.UUID, message: str) -> None:
    async def work(conn: AsyncConnection) -> None:
        await conn.execute(
            update(attachments)
            .where(attachments.c.id == attachment_id)
            .values(status="failed", error=message, updated_at=func.now())
        )

    try:
        await run_in_transaction(engine, work)
    except Exception:
        log.exception("could not mark attachment %s failed", attachment_id)

"""Retention job types: delete what is older than its retention, in small steps.

Every cutoff is a ``Cutoff`` counted back from the run's start (timezone-aware UTC;
a naive value cannot become one).  Rows go in transactions of
``HERALD_RETENTION_BATCH``; stream entries go with ``XTRIM … MINID`` (exact), the
streams found with ``SCAN`` over the key patterns of the journal and the task
queue, a pipeline of at most ``HERALD_RETENTION_BATCH`` trims at a time.  A reader
whose cursor falls behind a trim gets the usual ``herald.gap`` (reason
``trimmed``) before its next event.  Each part reports ``deleted`` plus details;
a setting (or ``params.older_than_s``) of 0 keeps everything.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import redis.asyncio as aioredis
from sqlalchemy import ColumnElement, Table, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from herald.journal.envelope import format_time
from herald.journal.keys import stream_key_pattern
from herald.journal.maintenance.cutoff import Cutoff
from herald.journal.messages.store import cleanup_message_events
from herald.journal.printers.store import delete_statuses_before
from herald.journal.runtime.db import run_in_transaction
from herald.journal.runtime.metrics import RETENTION_DELETED
from herald.journal.tables import attachments, sources
from herald.journal.tasks.keys import dead_key
from herald.workers.maintenance.jobs import JobContext, JobError, JobTypes

__all__ = [
    "dead_letter_retention",
    "delete_batched",
    "message_events_retention",
    "printer_status_retention",
    "register",
    "retention_cleanup",
    "stream_retention",
    "trim_streams",
    "uploads_retention",
]

log = logging.getLogger("herald.maintenance")

AGE: Final = "older_than_s"  # the params field every retention part accepts
MAX_PIPELINE: Final = 500
# A source takes its files and chunks with it: fewer per transaction.
SOURCES_PER_BATCH: Final = 100
INTERNAL_MESSAGE: Final = "the retention part failed unexpectedly; the error was logged"


def register(types: JobTypes) -> None:
    types.job("message_events_retention", retention=True)(message_events_retention)
    types.job("stream_retention", retention=True)(stream_retention)
    types.job("uploads_retention", retention=True)(uploads_retention)
    types.job("dead_letter_retention", retention=True)(dead_letter_retention)
    types.job("printer_status_retention", retention=True)(printer_status_retention)
    types.job("retention_cleanup")(retention_cleanup)


def _kept(cutoff: Cutoff | None) -> dict[str, Any]:
    return {"deleted": 0, "cutoff": None} if cutoff is None else {}


async def message_events_retention(ctx: JobContext) -> dict[str, Any]:
    """Chat message events older than ``HERALD_MESSAGE_RETENTION_S``."""
    cutoff = ctx.cutoff(AGE, ctx.settings.message_retention_s)
    if cutoff is None:
        return _kept(cutoff)
    done = await cleanup_message_events(ctx.engine, cutoff.at, batch=ctx.settings.retention_batch)
    RETENTION_DELETED.labels("message_events").inc(done.deleted)
    return {**done.to_json(), "cutoff": format_time(cutoff.at)}


async def stream_retention(ctx: JobContext) -> dict[str, Any]:
    """User and topic stream entries older than ``HERALD_STREAM_RETENTION_S``."""
    cutoff = ctx.cutoff(AGE, ctx.settings.stream_retention_s)
    if cutoff is None:
        return _kept(cutoff)
    patterns = [stream_key_pattern("u"), stream_key_pattern("t")]
    counts = await trim_streams(ctx.redis, patterns, cutoff, ctx.settings.retention_batch)
    RETENTION_DELETED.labels("stream_entries").inc(counts["deleted"])
    return {**counts, "cutoff": format_time(cutoff.at)}


async def dead_letter_retention(ctx: JobContext) -> dict[str, Any]:
    """Dead-letter task entries older than ``HERALD_DEAD_LETTER_RETENTION_S``."""
    cutoff = ctx.cutoff(AGE, ctx.settings.dead_letter_retention_s)
    if cutoff is None:
        return _kept(cutoff)
    counts = await trim_streams(ctx.redis, [dead_key("*")], cutoff, ctx.settings.retention_batch)
    RETENTION_DELETED.labels("dead_letters").inc(counts["deleted"])
    return {**counts, "cutoff": format_time(cutoff.at)}


async def uploads_retention(ctx: JobContext) -> dict[str, Any]:
    """Uploaded sources older than ``HERALD_UPLOAD_RETENTION_S`` (with their files and
    chunks; connector sources are never aged out) and attachments older than
    ``HERALD_ATTACHMENT_RETENTION_S``.  Work in progress (queued, ingesting,
    processing) is left alone.  Params: ``uploads_older_than_s``,
    ``attachments_older_than_s``."""
    batch = ctx.settings.retention_batch
    out: dict[str, Any] = {"deleted": 0}
    uploads = ctx.cutoff("uploads_older_than_s", ctx.settings.upload_retention_s)
    if uploads is not None:
        where = (
            (sources.c.kind == "upload")
            & sources.c.status.in_(("ready", "failed"))
            & (sources.c.created_at < uploads.at)
        )
        n = await delete_batched(ctx.engine, sources, where, min(batch, SOURCES_PER_BATCH))
        RETENTION_DELETED.labels("uploads").inc(n)
        out["uploads_deleted"], out["uploads_cutoff"] = n, format_time(uploads.at)
        out["deleted"] += n
    kept = ctx.cutoff("attachments_older_than_s", ctx.settings.attachment_retention_s)
    if kept is not None:
        where = attachments.c.status.in_(("ready", "failed")) & (attachments.c.created_at < kept.at)
        n = await delete_batched(ctx.engine, attachments, where, batch)
        RETENTION_DELETED.labels("attachments").inc(n)
        out["attachments_deleted"], out["attachments_cutoff"] = n, format_time(kept.at)
        out["deleted"] += n
    return out


async def printer_status_retention(ctx: JobContext) -> dict[str, Any]:
    """Printer status cache rows whose last probe attempt is older than
    ``HERALD_PRINTER_STATUS_RETENTION_S`` (printers no probe reaches any more)."""
    cutoff = ctx.cutoff(AGE, ctx.settings.printer_status_retention_s)
    if cutoff is None:
        return _kept(cutoff)
    batch = ctx.settings.retention_batch
    total = 0
    while True:

        async def work(conn: AsyncConnection, at: datetime = cutoff.at) -> int:
            return await delete_statuses_before(conn, at, batch)

        n = await run_in_transaction(ctx.engine, work)
        total += n
        if n < batch:
            break
    RETENTION_DELETED.labels("printer_status").inc(total)
    return {"deleted": total, "cutoff": format_time(cutoff.at)}


async def retention_cleanup(ctx: JobContext) -> dict[str, Any]:
    """Every retention part in turn, each with its own settings and
    ``params.<part name>``.  A failing part does not stop the others; the run then
    fails with ``partial_failure`` and the counts of the parts that worked."""
    parts: dict[str, Any] = {}
    failed: list[str] = []
    total = 0
    everything = ctx.job_types.retention_parts()
    for part in everything:
        try:
            result = await part.fn(ctx.part(part.name))
        except JobError as e:
            parts[part.name] = {**e.result, "error": {"code": e.code, "message": e.message}}
            failed.append(part.name)
            continue
        except Exception:
            log.exception("run %s: retention part %s failed", ctx.run.id, part.name)
            parts[part.name] = {"error": {"code": "internal_error", "message": INTERNAL_MESSAGE}}
            failed.append(part.name)
            continue
        parts[part.name] = result
        total += int(result.get("deleted", 0))
    out = {"deleted": total, "parts": parts}
    if failed:
        message = f"{len(failed)} of {len(everything)} retention parts failed: {', '.join(failed)}"
        raise JobError("partial_failure", message, result=out)
    return out


async def trim_streams(
    redis: aioredis.Redis, patterns: Sequence[str], cutoff: Cutoff, batch: int
) -> dict[str, int]:
    """``XTRIM key MINID <cutoff>`` on every stream key matching ``patterns``:
    ``{"deleted": entries, "streams": keys seen, "trimmed": keys that lost entries}``."""
    counts = {"deleted": 0, "streams": 0, "trimmed": 0}
    size = max(1, min(batch, MAX_PIPELINE))
    for pattern in patterns:
        keys: list[bytes] = []
        async for key in redis.scan_iter(match=pattern, count=1000, _type="stream"):
            keys.append(key)
            if len(keys) >= size:
                await _trim(redis, keys, cutoff, counts)
                keys = []
        if keys:
            await _trim(redis, keys, cutoff, counts)
    return counts


async def _trim(
    redis: aioredis.Redis, keys: list[bytes], cutoff: Cutoff, counts: dict[str, int]
) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.xtrim(key, minid=cutoff.min_stream_id, approximate=False)
        removed = await pipe.execute()
    counts["streams"] += len(keys)
    counts["trimmed"] += sum(1 for n in removed if int(n) > 0)
    counts["deleted"] += sum(int(n) for n in removed)


async def delete_batched(
    engine: AsyncEngine, table: Table, where: ColumnElement[bool], batch: int
) -> int:
    """Delete ``table`` rows matching ``where`` (by ``id``), ``batch`` per
    transaction, skipping rows another transaction holds; returns how many."""
    total = 0
    while True:

        async def work(conn: AsyncConnection) -> int:
            victims = (
                select(table.c.id)
                .where(where)
                .limit(batch)
                .with_for_update(skip_locked=True)
                .scalar_subquery()
            )
            result = await conn.execute(delete(table).where(table.c.id.in_(victims)))
            return int(result.rowcount)

        n = await run_in_transaction(engine, work)
        total += n
        if n < batch:
            return total

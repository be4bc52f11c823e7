"""Connector sources: a directory on the server, synced into a source's chunks.

A sync hashes every file (sha256), re-ingests new and changed ones, removes the
chunks of deleted ones and leaves unchanged ones alone; their tokens count
against ``HERALD_INGEST_MAX_TOKENS`` first.  Files with unsupported extensions are
skipped and counted; one file that cannot be read (corrupt, too large, a name
that is not UTF-8) is counted with its error and does not stop the sync.

Hidden entries (names starting with ``.``) are ignored, directory symlinks are not
followed, and a file symlink counts only when its target is inside the directory,
so a link cannot expose a file outside the configured roots.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from herald.journal.runtime.db import run_in_transaction
from herald.journal.tables import chunks, source_files
from herald.workers.chunkstore import finish, remove_file, replace_chunks
from herald.workers.extract import (
    ExtractError,
    ExtractLimits,
    content_type_for,
    extract_text,
    split,
)
from herald.workers.task import TaskContext, TaskError

__all__ = ["ScannedFile", "inside_roots", "scan_directory", "sync_connector"]

_READ_BLOCK = 1 << 20
MAX_ERRORS_REPORTED = 10  # keeps the completed envelope small however many files fail


@dataclass(frozen=True, slots=True)
class ScannedFile:
    path: str  # relative to the directory, "/"-separated
    size: int
    sha256: str  # "" when not read (unsupported, too large, unreadable)
    error: str | None = None  # file_too_large | unreadable_file | undecodable_name


def inside_roots(path: Path, roots: list[str]) -> bool:
    """True when ``path`` (symlinks resolved) is one of ``roots`` or below one."""
    resolved = path.resolve()
    return any(resolved.is_relative_to(Path(root).resolve()) for root in roots if root)


def scan_directory(root: Path, max_bytes: int) -> list[ScannedFile]:
    """Every regular file below ``root``, sorted by path.  Supported files no larger
    than ``max_bytes`` are hashed; others are listed with no hash (and an error
    when they are too large or unreadable)."""
    base = root.resolve()
    found: list[ScannedFile] = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            full = Path(dirpath) / name
            rel = full.relative_to(base).as_posix()
            if not _utf8(rel):
                # Not storable (or publishable) as text: report it under a readable name.
                shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                found.append(ScannedFile(shown, 0, "", "undecodable_name"))
                continue
            try:
                target = full.resolve(strict=True)
                if not target.is_relative_to(base) or not target.is_file():
                    continue
                size = target.stat().st_size
            except (OSError, RuntimeError):
                continue  # a dangling or looping link
            if content_type_for(name) is None:
                found.append(ScannedFile(rel, size, ""))
            elif size > max_bytes:
                found.append(ScannedFile(rel, size, "", "file_too_large"))
            else:
                try:
                    found.append(ScannedFile(rel, size, _sha256(target)))
                except OSError:
                    found.append(ScannedFile(rel, size, "", "unreadable_file"))
    found.sort(key=lambda f: f.path)
    return found


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@dataclass(slots=True)
class _SyncTally:
    added: int = 0
    changed: int = 0
    removed: int = 0
    skipped: int = 0
    unreadable: int = 0
    limited: bool = False
    errors: list[dict[str, str]] = field(default_factory=list)
    unreadable_paths: set[str] = field(default_factory=set)

    def failed(self, path: str, code: str) -> None:
        self.unreadable += 1
        self.unreadable_paths.add(path)
        if len(self.errors) < MAX_ERRORS_REPORTED:
            # Paths can be long; the whole list must fit in one event envelope.
            self.errors.append({"path": path[:200], "error": code})


async def sync_connector(
    ctx: TaskContext, engine: AsyncEngine, source_id: uuid.UUID, location: str, *, full: bool
) -> dict[str, Any]:
    """Bring the source's chunks in line with its directory (``full``: re-ingest every
    file, not only new and changed ones) and return the totals and sync counts."""
    root = await asyncio.to_thread(_open_root, location, ctx.settings.connector_roots)
    scanned = await asyncio.to_thread(scan_directory, root, ctx.settings.ingest_max_upload_bytes)

    async def load(conn: AsyncConnection) -> tuple[dict[str, str], dict[str, int]]:
        known = await conn.execute(
            select(source_files.c.path, source_files.c.sha256).where(
                source_files.c.source_id == source_id
            )
        )
        tokens = await conn.execute(
            select(chunks.c.path, func.sum(chunks.c.token_count))
            .where(chunks.c.source_id == source_id)
            .group_by(chunks.c.path)
        )
        return {p: s for p, s in known}, {p: int(n) for p, n in tokens}

    known, stored_tokens = await run_in_transaction(engine, load)
    tally = _SyncTally()
    work: list[ScannedFile] = []
    seen: set[str] = set()
    for item in scanned:
        if content_type_for(item.path) is None:
            tally.skipped += 1
            continue
        if item.error is not None:
            tally.failed(item.path, item.error)
            continue
        seen.add(item.path)
        if full or known.get(item.path) != item.sha256:
            work.append(item)
    gone = sorted(set(known) - seen)
    # Unchanged files keep their chunks, so they spend the token budget first.
    kept = set(known) - {w.path for w in work} - set(gone)
    budget = ctx.settings.ingest_max_tokens - sum(stored_tokens.get(p, 0) for p in kept)

    total, done = len(work) + len(gone), 0
    for path in gone:
        await remove_file(engine, source_id, path)
        # A file still there but unreadable now is counted as unreadable, not removed.
        tally.removed += path not in tally.unreadable_paths
        done += 1
        await ctx.progress(done, total)
    for item in work:
        budget = await _ingest_file(ctx, engine, source_id, root, item, known, budget, tally)
        done += 1
        await ctx.progress(done, total)

    result = await finish(engine, source_id, tally.limited)
    return {
        **result,
        "added": tally.added,
        "changed": tally.changed,
        "removed": tally.removed,
        "skipped": tally.skipped,
        "unreadable": tally.unreadable,
        "errors": tally.errors,
    }


def _open_root(location: str, roots: list[str]) -> Path:
    # Checked on every run: the roots may have changed since the source was made.
    root = Path(location).resolve()
    if not inside_roots(root, roots):
        raise TaskError(
            "connector_path_forbidden",
            "the connector's directory is no longer inside HERALD_CONNECTOR_ROOTS",
            retry=False,
        )
    if not root.is_dir():
        raise TaskError(
            "connector_path_missing", f"the directory {location} does not exist", retry=False
        )
    return root


async def _ingest_file(
    ctx: TaskContext,
    engine: AsyncEngine,
    source_id: uuid.UUID,
    root: Path,
    item: ScannedFile,
    known: dict[str, str],
    budget: int,
    tally: _SyncTally,
) -> int:
    """Ingest one connector file; returns the token budget left."""

    limit = ctx.settings.ingest_max_upload_bytes

    def read() -> bytes:
        # The file may have changed since the scan: check its target and size again.
        target = (root / item.path).resolve(strict=True)
        if not target.is_relative_to(root):
            raise ExtractError("unreadable_file", "the link now points outside the directory")
        with target.open("rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise ExtractError("file_too_large", f"over {limit} bytes")
        return data

    try:
        data = await asyncio.to_thread(read)
        limits = ExtractLimits(**ctx.settings.extract_limits)
        text = await asyncio.to_thread(extract_text, item.path, data, limits)
    except (ExtractError, OSError, RuntimeError) as e:
        # OSError: deleted or made unreadable since the scan; RuntimeError: a link loop.
        tally.failed(item.path, e.code if isinstance(e, ExtractError) else "unreadable_file")
        if item.path in known:
            await remove_file(engine, source_id, item.path)
        return budget
    cut = split(
        text, ctx.settings.ingest_chunk_tokens, max(0, budget), ctx.settings.ingest_max_chars
    )
    tally.limited = tally.limited or cut.limited
    row = {
        "content_type": content_type_for(item.path) or "application/octet-stream",
        # The hash of the bytes actually ingested, in case the file changed since the scan.
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        "content": None,
    }
    await replace_chunks(engine, source_id, item.path, cut.chunks, file_row=row)
    if item.path not in known:
        tally.added += 1
    elif known[item.path] != item.sha256:
        tally.changed += 1
    return budget - cut.tokens

"""Retention on real data, run the way production runs it (a manual run of a
retention job, executed by the worker runtime): streams, message events, uploads,
attachments and dead letters older than the cutoff are gone, newer ones kept,
the counts in the run's result; a reader whose cursor was trimmed by age gets one
``herald.gap`` (``trimmed``) from the history endpoint and from a live SSE stream
of a real ``herald serve``."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select

from herald.journal.envelope import prepare
from herald.journal.maintenance import NaiveDatetime, dispatcher
from herald.journal.positions import Target
from herald.journal.printers import store as printer_store
from herald.journal.printers.spec import PrinterSpec
from herald.journal.runtime.db import run_in_transaction
from herald.journal.tables import (
    attachments,
    chunks,
    message_events,
    messages,
    printer_status,
    printers,
    source_files,
    sources,
)
from herald.journal.tasks.queue import dead_key
from tests.maintenance import Maint, maint_env
from tests.servers import HeraldProcess
from tests.sseclient import open_sse

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)


@pytest.fixture
async def maint(unique: str, migrated_database: str) -> AsyncIterator[Maint]:
    async for env in maint_env(unique, upload_retention_s=7 * 86400):
        yield env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeraldProcess]:
    with HeraldProcess(tmp_path_factory.mktemp("herald")) as h:
        yield h


async def run_job(maint: Maint, job_type: str, params: dict[str, Any] | None = None) -> Any:
    """One manual run of a job of ``job_type``, executed by a worker; the finished run."""
    job = await maint.job(job_type, job_type, params=params or {})
    run = await maint.store.start_manual(job.key, dispatcher(maint.tasks, maint.settings))
    await maint.worker().run_until_idle()
    done = await maint.store.run(run.id)
    assert done is not None and done.status == "success", done
    return done


async def seed_old_entries(maint: Maint, target: Target, at: datetime, n: int) -> list[str]:
    """``n`` entries written at ``at``, in the journal's own entry format (as if
    published then), with the stream's metadata; returns their ids."""
    ids, previous = [], ""
    epoch = secrets.token_hex(6)
    for i in range(n):
        entry_id = f"{int(at.timestamp() * 1000) + i}-0"
        prepared = prepare(
            "demo.old", {"n": i}, source="/herald", subject=str(target), max_bytes=65536, time=at
        )
        fields = {"t": prepared.type, "p": previous, "e": prepared.with_id(entry_id)}
        await maint.redis.xadd(target.stream_key, fields, id=entry_id)  # type: ignore[arg-type]
        ids.append(entry_id)
        previous = entry_id
    await maint.redis.hset(target.meta_key, mapping={"epoch": epoch, "last": previous})
    return ids


async def test_old_stream_entries_are_trimmed_and_a_reader_behind_gets_one_gap(
    maint: Maint, server: HeraldProcess
):
    user = Target.user(maint.name)
    old = await seed_old_entries(maint, user, datetime.now(UTC) - 10 * DAY, 5)
    new = [str((await maint.journal.publish(user, "demo.new", {"n": i})).id) for i in range(3)]
    token = server.token(maint.name)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
            first = (await http.get("/api/events/history", params={"limit": 2})).json()
            assert [e["id"] for e in first["events"]] == old[:2]
            cursor = first["next_cursor"]

            done = await run_job(maint, "stream_retention", {"older_than_s": 86400})
            assert done.result["deleted"] >= 5 and done.result["trimmed"] >= 1
            kept = [r[0].decode() for r in await maint.redis.xrange(user.stream_key)]
            assert kept == new  # older than a day: gone; the rest: kept

            page = (await http.get("/api/events/history", params={"after": cursor})).json()
            types = [e["type"] for e in page["events"]]
            assert types == ["herald.gap", "demo.new", "demo.new", "demo.new"]
            gap = page["events"][0]["data"]
            assert (gap["reason"], gap["after"], gap["first_available"]) == (
                "trimmed",
                old[1],
                new[0],
            )
            assert page["gaps"] == [gap]

            async with open_sse(http, "/api/events", token, last_event_id=cursor) as stream:
                got = [(await stream.next_event()).json() for _ in range(4)]
            assert [e["type"] for e in got] == types
            assert got[0]["data"]["reason"] == "trimmed"

            # A reader already past the trim is told nothing.
            fresh = (await http.get("/api/events/history", params={"after": new[0]})).json()
            assert [e["type"] for e in fresh["events"]] == ["demo.new", "demo.new"]
            assert fresh["gaps"] == []
    finally:
        await maint.redis.delete(user.stream_key, user.meta_key)


async def test_old_message_events_uploads_attachments_and_dead_letters_go_new_ones_stay(
    maint: Maint,
):
    now = datetime.now(UTC)
    old, recent = now - 40 * DAY, now - DAY
    message_ids = await seed_messages(maint, {old: 7, recent: 3})
    upload_ids = await seed_sources(maint, now)
    attachment_ids = await seed_attachments(maint, {old: 2, recent: 1})
    dead = dead_key(maint.name)
    for i in range(4):
        await maint.redis.xadd(dead, {"id": f"old{i}"}, id=f"{int(old.timestamp() * 1000) + i}-0")
    await maint.redis.xadd(dead, {"id": "recent"})

    done = await run_job(maint, "retention_cleanup")
    parts = done.result["parts"]
    assert set(parts) == {
        "message_events_retention",
        "stream_retention",
        "uploads_retention",
        "dead_letter_retention",
        "printer_status_retention",
    }
    assert parts["message_events_retention"]["deleted"] >= 7
    assert parts["uploads_retention"]["uploads_deleted"] >= 1
    assert parts["uploads_retention"]["attachments_deleted"] >= 2
    assert parts["dead_letter_retention"]["deleted"] >= 4
    assert done.result["deleted"] == sum(p["deleted"] for p in parts.values())

    async with maint.engine.connect() as conn:
        left = await conn.execute(
            select(message_events.c.message_id, func.count())
            .where(message_events.c.message_id.in_(message_ids))
            .group_by(message_events.c.message_id)
        )
        assert {mid: n for mid, n in left} == {message_ids[1]: 3}
        kept_sources = set(
            (await conn.execute(select(sources.c.id).where(sources.c.id.in_(upload_ids.values()))))
            .scalars()
            .all()
        )
        assert kept_sources == {upload_ids[k] for k in ("recent", "connector", "ingesting")}
        orphans = await conn.execute(
            select(func.count()).where(chunks.c.source_id == upload_ids["old"])
        )
        assert orphans.scalar_one() == 0  # the deleted upload's chunks went with it
        kept_attachments = (
            await conn.execute(select(attachments.c.id).where(attachments.c.id.in_(attachment_ids)))
        ).scalars()
        assert set(kept_attachments) == set(attachment_ids[2:])
    assert [f[b"id"] for _, f in await maint.redis.xrange(dead)] == [b"recent"]


async def seed_messages(maint: Maint, counts: dict[datetime, int]) -> list[uuid.UUID]:
    ids = []
    async with maint.engine.begin() as conn:
        for created, n in counts.items():
            message_id = uuid.uuid4()
            ids.append(message_id)
            await conn.execute(insert(messages).values(id=message_id, user_id=maint.name))
            await conn.execute(
                insert(message_events),
                [
                    {
                        "message_id": message_id,
                        "sequence_no": i,
                        "event_type": "answer",
                        "payload": {"text": str(i)},
                        "created_at": created,
                    }
                    for i in range(n)
                ],
            )
    return ids


async def seed_sources(maint: Maint, now: datetime) -> dict[str, uuid.UUID]:
    """An old ready upload (goes), a recent one, an old connector source and an old
    upload still being ingested (all three stay)."""
    specs = {
        "old": ("upload", "ready", now - 30 * DAY),
        "recent": ("upload", "ready", now - DAY),
        "connector": ("connector", "ready", now - 30 * DAY),
        "ingesting": ("upload", "ingesting", now - 30 * DAY),
    }
    ids = {}
    async with maint.engine.begin() as conn:
        for name, (kind, status, created) in specs.items():
            source_id = ids[name] = uuid.uuid4()
            await conn.execute(
                insert(sources).values(
                    id=source_id,
                    user_id=maint.name,
                    name=name,
                    kind=kind,
                    status=status,
                    location=str(Path("/srv") / name) if kind == "connector" else None,
                    created_at=created,
                )
            )
            body = f"{name} text".encode()
            await conn.execute(
                insert(source_files).values(
                    source_id=source_id,
                    path=f"{name}.txt",
                    content_type="text/plain",
                    sha256=hashlib.sha256(body).hexdigest(),
                    size_bytes=len(body),
                    content=body,
                )
            )
            await conn.execute(
                insert(chunks).values(
                    source_id=source_id, path=f"{name}.txt", ordinal=0, text=name, token_count=1
                )
            )
    return ids


async def seed_attachments(maint: Maint, counts: dict[datetime, int]) -> list[uuid.UUID]:
    ids = []
    async with maint.engine.begin() as conn:
        for created, n in counts.items():
            for _ in range(n):
                attachment_id = uuid.uuid4()
                ids.append(attachment_id)
                await conn.execute(
                    insert(attachments).values(
                        id=attachment_id,
                        user_id=maint.name,
                        filename="a.txt",
                        content_type="text/plain",
                        size_bytes=1,
                        content=b"a",
                        status="ready",
                        created_at=created,
                    )
                )
    return ids


async def test_a_retention_setting_of_zero_keeps_everything(maint: Maint):
    done = await run_job(maint, "message_events_retention", {"older_than_s": 0})
    assert done.result == {"deleted": 0, "cutoff": None}


async def test_printer_status_of_printers_no_probe_reached_within_retention_goes(maint: Maint):
    """A row whose last probe *attempt* is past the cutoff goes (nothing probes that
    printer any more); a printer offline for as long but still probed keeps its row
    and its last snapshot, and so does a fresh one.  The printers themselves stay."""
    now = datetime.now(UTC)
    old, recent = now - 40 * DAY, now - timedelta(minutes=1)
    # Ports no agent listens on, and a model per test: ids no other test uses.
    specs = {
        name: PrinterSpec(
            name=name, model=f"{maint.name}-{name}", host="127.0.0.1", port=9, community=name
        )
        for name in ("abandoned", "offline", "fresh")
    }
    snapshot = {"state": "idle", "errors": []}

    async def seed(conn: Any) -> None:
        for spec in specs.values():
            await printer_store.upsert_printer(conn, spec)
        await printer_store.record_success(conn, specs["abandoned"].id, snapshot, old)
        await printer_store.record_success(conn, specs["offline"].id, snapshot, old)
        await printer_store.record_failure(conn, specs["offline"].id, "no SNMP answer", recent)
        await printer_store.record_success(conn, specs["fresh"].id, snapshot, recent)

    await run_in_transaction(maint.engine, seed)
    ids = [spec.id for spec in specs.values()]
    try:
        done = await run_job(maint, "printer_status_retention", {"older_than_s": 30 * 86400})
        assert done.result["deleted"] >= 1
        assert done.result["cutoff"].endswith("Z")
        async with maint.engine.connect() as conn:
            rows = await conn.execute(
                select(
                    printer_status.c.printer_id, printer_status.c.online, printer_status.c.parsed
                ).where(printer_status.c.printer_id.in_(ids))
            )
            left = {row.printer_id: (row.online, row.parsed) for row in rows}
            kept_printers = await conn.execute(select(func.count()).where(printers.c.id.in_(ids)))
            assert kept_printers.scalar_one() == 3
        assert left == {
            specs["offline"].id: (False, snapshot),
            specs["fresh"].id: (True, snapshot),
        }
    finally:
        async with maint.engine.begin() as conn:
            await conn.execute(printers.delete().where(printers.c.id.in_(ids)))


async def test_printer_status_retention_refuses_a_naive_cutoff(maint: Maint):
    naive = datetime.now(UTC).replace(tzinfo=None)
    with pytest.raises(NaiveDatetime, match="naive"):
        await run_in_transaction(
            maint.engine, lambda conn: printer_store.delete_statuses_before(conn, naive, 10)
        )

"""Printers and their status cache in PostgreSQL: the one place that reads and
writes the ``printers`` and ``printer_status`` tables.

Every function takes a connection inside a transaction (``run_in_transaction``),
so a caller decides what one unit of work is and the retry rule of DESIGN §7
applies.  Status writes keep the last attempt and the last success apart: a
failure records ``online = false``, the error and the attempt's time, and leaves
the last successful snapshot and its time untouched.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, delete, func, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from herald.journal.maintenance.cutoff import require_aware
from herald.journal.printers.spec import PrinterSpec
from herald.journal.runtime.db import run_in_transaction
from herald.journal.tables import printer_status, printers

__all__ = [
    "Printer",
    "StatusRow",
    "StatusWrite",
    "delete_printer",
    "delete_statuses_before",
    "get_printer",
    "list_printers",
    "list_statuses",
    "read_status",
    "record_failure",
    "record_success",
    "register_all",
    "update_printer",
    "upsert_printer",
]


@dataclass(frozen=True, slots=True)
class Printer:
    id: uuid.UUID
    name: str
    model: str
    host: str
    port: int
    community: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: RowMapping) -> Printer:
        return cls(
            row["id"],
            row["name"],
            row["model"],
            row["host"],
            row["port"],
            row["community"],
            row["created_at"],
            row["updated_at"],
        )


@dataclass(frozen=True, slots=True)
class StatusRow:
    """One printer's cache row: the last attempt and the last success."""

    printer_id: uuid.UUID
    parsed: dict[str, Any] | None  # the last successful snapshot
    online: bool  # the last attempt succeeded
    captured_at: datetime  # the last attempt
    last_success_at: datetime | None
    last_error: str | None

    @classmethod
    def of(cls, row: RowMapping) -> StatusRow:
        return cls(
            row["printer_id"],
            row["parsed"],
            row["online"],
            row["captured_at"],
            row["last_success_at"],
            row["last_error"],
        )


@dataclass(frozen=True, slots=True)
class StatusWrite:
    """A status write that took effect, with the row as it was before it."""

    previous: StatusRow | None  # None: the printer's first probe
    current: StatusRow


# -- printers -----------------------------------------------------------------------


async def upsert_printer(conn: AsyncConnection, spec: PrinterSpec) -> tuple[Printer, bool]:
    """Register ``spec`` under its derived id; an existing printer keeps its id and
    gets the new name and community.  Returns the printer and whether it is new."""
    values = pg_insert(printers).values(
        id=spec.id,
        name=spec.name,
        model=spec.model,
        host=spec.host,
        port=spec.port,
        community=spec.community,
    )
    stmt = values.on_conflict_do_update(
        index_elements=[printers.c.id],
        set_={
            "name": values.excluded.name,
            "community": values.excluded.community,
            "updated_at": func.now(),
        },
    ).returning(*printers.c, literal_column("xmax = 0").label("inserted"))
    row = (await conn.execute(stmt)).mappings().one()
    return Printer.of(row), bool(row["inserted"])


async def register_all(engine: AsyncEngine, specs: Sequence[PrinterSpec]) -> list[Printer]:
    """Upsert the printers configured in ``HERALD_PRINTERS``, in one transaction."""

    async def work(conn: AsyncConnection) -> list[Printer]:
        return [(await upsert_printer(conn, spec))[0] for spec in specs]

    return await run_in_transaction(engine, work) if specs else []


async def list_printers(conn: AsyncConnection) -> list[Printer]:
    rows = await conn.execute(select(printers).order_by(printers.c.name, printers.c.id))
    return [Printer.of(r) for r in rows.mappings()]


async def get_printer(conn: AsyncConnection, printer: uuid.UUID) -> Printer | None:
    row = (await conn.execute(select(printers).where(printers.c.id == printer))).mappings()
    found = row.one_or_none()
    return Printer.of(found) if found is not None else None


async def update_printer(
    conn: AsyncConnection, printer: uuid.UUID, changes: dict[str, str]
) -> Printer | None:
    """Change ``name`` and/or ``community`` (the fields that are not the printer's
    identity); None if there is no such printer."""
    assert set(changes) <= {"name", "community"}, changes
    if not changes:
        return await get_printer(conn, printer)
    stmt = (
        update(printers)
        .where(printers.c.id == printer)
        .values(**changes, updated_at=func.now())
        .returning(*printers.c)
    )
    found = (await conn.execute(stmt)).mappings().one_or_none()
    return Printer.of(found) if found is not None else None


async def delete_printer(conn: AsyncConnection, printer: uuid.UUID) -> bool:
    """Remove the printer and (cascade) its status; False if there was none."""
    result = await conn.execute(
        delete(printers).where(printers.c.id == printer).returning(printers.c.id)
    )
    return result.first() is not None


# -- status -------------------------------------------------------------------------


def _joined() -> Any:
    return select(printers, *[c for c in printer_status.c]).select_from(
        printers.outerjoin(printer_status, printer_status.c.printer_id == printers.c.id)
    )


def _pair(row: RowMapping) -> tuple[Printer, StatusRow | None]:
    status = StatusRow.of(row) if row["printer_id"] is not None else None
    return Printer.of(row), status


async def read_status(
    conn: AsyncConnection, printer: uuid.UUID
) -> tuple[Printer, StatusRow | None] | None:
    """The printer and its cached status (None before its first probe); None if
    there is no such printer.  Reads the cache only."""
    found = (await conn.execute(_joined().where(printers.c.id == printer))).mappings()
    row = found.one_or_none()
    return _pair(row) if row is not None else None


async def list_statuses(conn: AsyncConnection) -> list[tuple[Printer, StatusRow | None]]:
    rows = await conn.execute(_joined().order_by(printers.c.name, printers.c.id))
    return [_pair(r) for r in rows.mappings()]


async def _previous(conn: AsyncConnection, printer: uuid.UUID) -> tuple[bool, StatusRow | None]:
    """Whether the printer still exists, and its status row.  The key-share lock
    keeps the printer from being deleted until this transaction's write is in."""
    stmt = (
        select(printers.c.id, *[c for c in printer_status.c])
        .select_from(
            printers.outerjoin(printer_status, printer_status.c.printer_id == printers.c.id)
        )
        .where(printers.c.id == printer)
        .with_for_update(key_share=True, read=True, of=printers)
    )
    row = (await conn.execute(stmt)).mappings().one_or_none()
    if row is None:
        return False, None
    return True, StatusRow.of(row) if row["printer_id"] is not None else None


async def _write(
    conn: AsyncConnection, printer: uuid.UUID, values: dict[str, Any], on_update: Iterable[str]
) -> StatusWrite | None:
    exists, previous = await _previous(conn, printer)
    if not exists:
        return None  # deleted while it was probed
    insert = pg_insert(printer_status).values(printer_id=printer, **values)
    stmt = insert.on_conflict_do_update(
        index_elements=[printer_status.c.printer_id],
        set_={**{name: insert.excluded[name] for name in on_update}, "updated_at": func.now()},
        # Two probes of one printer racing (a claim outlived by a slow write): the
        # older attempt never overwrites the newer one.
        where=printer_status.c.captured_at < insert.excluded.captured_at,
    ).returning(*printer_status.c)
    row = (await conn.execute(stmt)).mappings().one_or_none()
    return StatusWrite(previous, StatusRow.of(row)) if row is not None else None


async def record_success(
    conn: AsyncConnection, printer: uuid.UUID, parsed: dict[str, Any], at: datetime
) -> StatusWrite | None:
    """One statement upserts the snapshot with ``online = true`` and ``captured_at =
    last_success_at = at``.  None if the printer is gone or a newer attempt is in."""
    values = {
        "parsed": parsed,
        "online": True,
        "captured_at": at,
        "last_success_at": at,
        "last_error": None,
    }
    return await _write(conn, printer, values, values)


async def record_failure(
    conn: AsyncConnection, printer: uuid.UUID, error: str, at: datetime
) -> StatusWrite | None:
    """``online = false``, the error and ``captured_at = at``; the last snapshot and
    ``last_success_at`` stay as they were."""
    values = {"online": False, "captured_at": at, "last_error": error}
    return await _write(conn, printer, values, values)


async def delete_statuses_before(conn: AsyncConnection, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` status rows whose last probe *attempt* (``captured_at``)
    is before ``before`` (timezone-aware; a naive value raises ``NaiveDatetime``):
    printers no probe has touched since, whose cache would otherwise show an old
    state as the current one.  A printer still probed is never affected, however
    long it has been offline (each failed attempt moves ``captured_at``).  Rows a
    probe is writing are skipped, not waited for.  Returns how many went."""
    cutoff = require_aware(before, "before")
    victims = (
        select(printer_status.c.printer_id)
        .where(printer_status.c.captured_at < cutoff)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    result = await conn.execute(
        delete(printer_status).where(printer_status.c.printer_id.in_(victims))
    )
    return int(result.rowcount)

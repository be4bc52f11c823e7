"""Page events in PostgreSQL, and the claim that announces each window transition
exactly once.

``claim_transitions`` is the same rule the maintenance scheduler uses for ticks:
every process may try, the database decides.  A transition is the instant a
``start_date`` (``window_opened``) or ``end_date`` (``window_closed``) of an
active event passed; it is due when that instant is at most ``now`` and newer
than the catch-up edge, and it counts only if the row held that value before the
instant passed (``at > updated_at``: an edit that moves a start into the past has
already been announced as ``updated``).  Claims are ``INSERT … ON CONFLICT DO
NOTHING`` on (event, change, instant); the process whose insert wins publishes
inside the same transaction, so a failed publish rolls the claim back and a later
pass retries it (with the same idempotency key).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from herald.journal.maintenance.cutoff import require_aware
from herald.journal.page_events.models import Change, PageEvent
from herald.journal.runtime.db import run_in_transaction
from herald.journal.tables import page_events

__all__ = ["EDITABLE", "PageEventStore", "Transition"]

EDITABLE = (
    "name",
    "description",
    "page_context",
    "filters",
    "limit",
    "is_active",
    "start_date",
    "end_date",
)


@dataclass(frozen=True, slots=True)
class Transition:
    uid: uuid.UUID
    page_context: str
    change: Change
    at: datetime


_CLAIM = text(
    """
    WITH due AS (
        SELECT uid, page_context, 'window_opened' AS change, start_date AS at
          FROM page_events
         WHERE is_active AND start_date <= :now AND start_date > :edge
           AND start_date > updated_at
        UNION ALL
        SELECT uid, page_context, 'window_closed', end_date
          FROM page_events
         WHERE is_active AND end_date <= :now AND end_date > :edge
           AND end_date > updated_at
    ), claimed AS (
        INSERT INTO page_event_transitions (event_uid, change, at, claimed_by)
        SELECT uid, change, at, :me FROM due
        ON CONFLICT DO NOTHING
        RETURNING event_uid, change, at
    )
    SELECT c.event_uid, d.page_context, c.change, c.at
      FROM claimed c JOIN due d ON d.uid = c.event_uid AND d.change = c.change AND d.at = c.at
     ORDER BY c.at, c.change DESC
    """
)

_NEXT_DUE = text(
    """
    SELECT least(
        (SELECT min(start_date) FROM page_events WHERE is_active AND start_date > :now),
        (SELECT min(end_date) FROM page_events WHERE is_active AND end_date > :now)
    )
    """
)


class PageEventStore:
    """Reads and writes ``page_events``; every method is one transaction, retried once
    on a connection fault (``run_in_transaction``)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def _run(self, work: Callable[[AsyncConnection], Awaitable[Any]]) -> Any:
        return await run_in_transaction(self.engine, work)

    async def create(self, fields: dict[str, Any], created_by: str) -> PageEvent:
        values = {k: fields[k] for k in EDITABLE if k in fields}
        values.update(uid=uuid.uuid4(), created_by=created_by)

        async def work(conn: AsyncConnection) -> PageEvent:
            query = insert(page_events).values(values).returning(page_events)
            row = (await conn.execute(query)).one()
            return PageEvent.from_row(row)

        event: PageEvent = await self._run(work)
        return event

    async def get(self, uid: uuid.UUID) -> PageEvent | None:
        async def work(conn: AsyncConnection) -> PageEvent | None:
            row = (
                await conn.execute(select(page_events).where(page_events.c.uid == uid))
            ).one_or_none()
            return None if row is None else PageEvent.from_row(row)

        found: PageEvent | None = await self._run(work)
        return found

    async def list_events(
        self,
        *,
        page_context: str | None = None,
        active: bool | None = None,
        limit: int = 500,
        offset: int = 0,
    ) -> list[PageEvent]:
        """Ordered by route, then newest first."""
        query = select(page_events)
        if page_context is not None:
            query = query.where(page_events.c.page_context == page_context)
        if active is not None:
            query = query.where(page_events.c.is_active.is_(active))
        query = (
            query.order_by(
                page_events.c.page_context,
                page_events.c.created_at.desc(),
                page_events.c.uid,
            )
            .limit(limit)
            .offset(offset)
        )

        async def work(conn: AsyncConnection) -> list[PageEvent]:
            return [PageEvent.from_row(r) for r in await conn.execute(query)]

        found: list[PageEvent] = await self._run(work)
        return found

    async def candidates(self, route: str) -> list[PageEvent]:
        """The active events of ``route`` whatever their window: what ``/current``
        resolves among (and caches)."""
        query = select(page_events).where(
            page_events.c.page_context == route, page_events.c.is_active
        )

        async def work(conn: AsyncConnection) -> list[PageEvent]:
            return [PageEvent.from_row(r) for r in await conn.execute(query)]

        found: list[PageEvent] = await self._run(work)
        return found

    async def replace(
        self, uid: uuid.UUID, fields: dict[str, Any]
    ) -> tuple[PageEvent, PageEvent] | None:
        """Set every editable field → (before, after), or None for an unknown uid."""
        values = {k: fields.get(k) for k in EDITABLE}
        if values["filters"] is None:
            values["filters"] = {}
        if values["is_active"] is None:
            values["is_active"] = True
        values["updated_at"] = func.now()

        async def work(conn: AsyncConnection) -> tuple[PageEvent, PageEvent] | None:
            old = (
                await conn.execute(
                    select(page_events).where(page_events.c.uid == uid).with_for_update()
                )
            ).one_or_none()
            if old is None:
                return None
            row = (
                await conn.execute(
                    update(page_events)
                    .where(page_events.c.uid == uid)
                    .values(values)
                    .returning(page_events)
                )
            ).one()
            return PageEvent.from_row(old), PageEvent.from_row(row)

        found: tuple[PageEvent, PageEvent] | None = await self._run(work)
        return found

    async def delete(self, uid: uuid.UUID) -> PageEvent | None:
        async def work(conn: AsyncConnection) -> PageEvent | None:
            row = (
                await conn.execute(
                    delete(page_events).where(page_events.c.uid == uid).returning(page_events)
                )
            ).one_or_none()
            return None if row is None else PageEvent.from_row(row)

        found: PageEvent | None = await self._run(work)
        return found

    async def claim_transitions(
        self,
        now: datetime,
        catchup_s: float,
        claimer: str,
        announce: Callable[[Transition], Awaitable[None]],
    ) -> list[Transition]:
        """Claim every due, unclaimed transition and ``announce`` each inside the
        claiming transaction (oldest first).  Returns what this caller claimed;
        another process's claims are not returned.  ``announce`` raising rolls back
        every claim of this call."""
        now = require_aware(now, "now")
        params = {"now": now, "edge": now - timedelta(seconds=catchup_s), "me": claimer}

        async def work(conn: AsyncConnection) -> list[Transition]:
            rows = (await conn.execute(_CLAIM, params)).all()
            claimed = [Transition(r[0], r[1], r[2], r[3]) for r in rows]
            for transition in claimed:
                await announce(transition)
            return claimed

        found: list[Transition] = await self._run(work)
        return found

    async def next_due(self, now: datetime) -> datetime | None:
        """The next instant after ``now`` at which an active event's window opens or
        closes, or None."""
        now = require_aware(now, "now")

        async def work(conn: AsyncConnection) -> datetime | None:
            value: datetime | None = (await conn.execute(_NEXT_DUE, {"now": now})).scalar()
            return value

        found: datetime | None = await self._run(work)
        return found

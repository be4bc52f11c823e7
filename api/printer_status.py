"""What the API says about a printer's status, from the probe's cache only (never
SNMP), and the readiness check judged on each printer's last *success*.

Kept apart from the routes so the readiness registry can import the check without
importing the routes (which import the app state).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from herald.api.readiness import Check, CheckResult
from herald.journal.envelope import format_time
from herald.journal.printers.store import Printer, StatusRow, list_statuses
from herald.journal.runtime.db import run_in_transaction

if TYPE_CHECKING:
    from herald.api.state import AppState

__all__ = [
    "MediaOut",
    "PrinterStatusOut",
    "SupplyOut",
    "check_printer_probe",
    "printer_probe_check",
    "status_of",
]


class MediaOut(BaseModel):
    """The loaded media of the printer's first input (Printer-MIB prtInput)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None  # prtInputMediaName, e.g. "12mm TZe"
    type: str | None  # prtInputMediaType
    width: int | None  # prtInputMediaDimXFeedDirDeclared, in width_unit
    width_unit: str | None  # tenThousandthsOfInches | micrometers
    width_mm: float | None


class SupplyOut(BaseModel):
    """One marker supply; level/max are null unless known (see the *_state)."""

    model_config = ConfigDict(extra="forbid")

    description: str | None
    level: int | None
    max: int | None
    percent: int | None
    level_state: str  # known | unrestricted | unknown | some_remaining
    max_state: str  # known | unrestricted | unknown


class PrinterStatusOut(BaseModel):
    """``GET /api/printers/{id}/status``: the cached status.  ``online`` is null
    before the first probe; state, errors, media, supplies and uptime are from the
    last *successful* probe (``last_success_at``), kept while the printer is offline."""

    model_config = ConfigDict(extra="forbid")

    printer_id: str
    name: str
    model: str
    online: bool | None
    state: str | None  # hrPrinterStatus: other | unknown | idle | printing | warmup
    device_status: str | None  # hrDeviceStatus: unknown | running | warning | testing | down
    errors: list[str]  # hrPrinterDetectedErrorState names, in bit order
    media: MediaOut | None
    supplies: list[SupplyOut]
    description: str | None  # sysDescr
    uptime_s: float | None  # sysUpTime
    captured_at: str | None  # the last probe (attempt)
    last_success_at: str | None
    last_probe_age_s: float | None
    last_success_age_s: float | None
    last_error: str | None
    note: str


def _age(at: datetime | None, now: datetime) -> float | None:
    return round(max(0.0, (now - at).total_seconds()), 3) if at is not None else None


def _note(row: StatusRow | None) -> str:
    if row is None:
        return "not probed yet"
    if row.online:
        return "online: the last probe succeeded"
    if row.last_success_at is None:
        return "offline: the printer has not answered a probe yet"
    return (
        "offline: the last probe failed; state, errors, media and supplies are from "
        f"the last successful probe at {format_time(row.last_success_at)}"
    )


def status_of(printer: Printer, row: StatusRow | None, now: datetime) -> PrinterStatusOut:
    parsed: dict[str, Any] = (row.parsed if row is not None else None) or {}
    ticks = parsed.get("uptime_ticks")
    return PrinterStatusOut(
        printer_id=str(printer.id),
        name=printer.name,
        model=printer.model,
        online=row.online if row is not None else None,
        state=parsed.get("state"),
        device_status=parsed.get("device_status"),
        errors=list(parsed.get("errors") or []),
        media=parsed.get("media"),
        supplies=parsed.get("supplies") or [],
        description=parsed.get("description"),
        uptime_s=ticks / 100 if isinstance(ticks, int) else None,
        captured_at=format_time(row.captured_at) if row is not None else None,
        last_success_at=(format_time(row.last_success_at) if row and row.last_success_at else None),
        last_probe_age_s=_age(row.captured_at, now) if row is not None else None,
        last_success_age_s=_age(row.last_success_at, now) if row is not None else None,
        last_error=row.last_error if row is not None else None,
        note=_note(row),
    )


async def check_printer_probe(state: AppState) -> CheckResult:
    """``ok`` while every printer's last success is within ``HERALD_PRINTER_FRESH_S``,
    ``stale`` within ``HERALD_PRINTER_STALE_S``, ``fail`` beyond.  Judged on the last
    success, never the last attempt: a printer probed a second ago that failed is as
    old as its last answer.  A printer that never answered counts from its
    registration."""
    if state.engine is None:
        return CheckResult("skipped", "no database configured")
    rows = await run_in_transaction(state.engine, list_statuses)
    if not rows:
        return CheckResult("skipped", "no printers registered")
    now = datetime.now(UTC)
    fresh_s, stale_s = state.settings.printer_fresh_s, state.settings.printer_stale_s
    ages = [
        (
            (now - (row.last_success_at if row and row.last_success_at else p.created_at)),
            p,
        )
        for p, row in rows
    ]
    oldest, who = max(ages, key=lambda pair: pair[0])
    oldest_s = round(max(0.0, oldest.total_seconds()), 3)
    late = sum(age.total_seconds() > fresh_s for age, _ in ages)
    if not late:
        return CheckResult(
            "ok", f"all {len(rows)} printers answered within {fresh_s:g} s", oldest_s, "s"
        )
    detail = (
        f"{late} of {len(rows)} printers without a successful probe within {fresh_s:g} s; "
        f"oldest: {who.name} ({who.id}), {oldest_s:.0f} s"
    )
    return CheckResult("stale" if oldest_s <= stale_s else "fail", detail, oldest_s, "s")


def printer_probe_check() -> Check:
    return Check("printer_probe", False, check_printer_probe)

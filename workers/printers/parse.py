"""From SNMP readings to a printer snapshot, and from two cache rows to an event.

Pure functions, tested with tables: no I/O, no clock.  ``Readings`` maps numeric
OIDs (dotted strings) to values already unwrapped from their SNMP types: ``int``
for INTEGER, Gauge32, Counter32 and TimeTicks, ``bytes`` for OCTET STRING.

What is read (numeric OIDs only, no MIB is loaded):

* SNMPv2-MIB sysDescr, sysUpTime (hundredths of a second since the agent started);
* HOST-RESOURCES-MIB (RFC 2790) hrDeviceStatus, hrPrinterStatus and
  hrPrinterDetectedErrorState of the first printer device;
* Printer-MIB (RFC 3805) prtInputMediaName, prtInputMediaType and the media width
  prtInputMediaDimXFeedDirDeclared with prtInputDimUnit of that device's first
  input, and prtMarkerSupplies description, level and max capacity.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from herald.journal.envelope import format_time
from herald.journal.printers.store import StatusRow, StatusWrite

__all__ = [
    "DEVICE_STATUS",
    "ERROR_BITS",
    "PRINTER_STATUS",
    "Readings",
    "decode_error_state",
    "event_data",
    "media_width_mm",
    "parse_snapshot",
    "rebooted",
    "supply",
    "transition",
]

Readings = Mapping[str, int | bytes]

SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
HR_DEVICE_STATUS = "1.3.6.1.2.1.25.3.2.1.5"  # .<hrDeviceIndex>
HR_PRINTER_ENTRY = "1.3.6.1.2.1.25.3.5.1"  # .<column>.<hrDeviceIndex>
HR_PRINTER_STATUS = HR_PRINTER_ENTRY + ".1"
HR_PRINTER_ERROR_STATE = HR_PRINTER_ENTRY + ".2"
PRT_INPUT_ENTRY = "1.3.6.1.2.1.43.8.2.1"  # .<column>.<hrDeviceIndex>.<prtInputIndex>
PRT_SUPPLIES_ENTRY = "1.3.6.1.2.1.43.11.1.1"  # .<column>.<hrDeviceIndex>.<supplyIndex>

# The scalars fetched with one GET and the table subtrees walked.
SCALARS = (SYS_DESCR, SYS_UPTIME)
TABLES = (HR_DEVICE_STATUS, HR_PRINTER_ENTRY, PRT_INPUT_ENTRY, PRT_SUPPLIES_ENTRY)

_INPUT_DIM_UNIT, _INPUT_XFEED, _INPUT_MEDIA_NAME, _INPUT_MEDIA_TYPE = 3, 5, 12, 21
_SUPPLY_DESCRIPTION, _SUPPLY_MAX, _SUPPLY_LEVEL = 6, 8, 9

PRINTER_STATUS = {1: "other", 2: "unknown", 3: "idle", 4: "printing", 5: "warmup"}
DEVICE_STATUS = {1: "unknown", 2: "running", 3: "warning", 4: "testing", 5: "down"}

# hrPrinterDetectedErrorState (RFC 2790): bit 0 is the most significant bit of the
# first byte.  The second byte starts at bit 8, and bit 11 (outputNearFull) is
# easy to lose: the names must stay in this exact order.
ERROR_BITS = (
    "lowPaper",
    "noPaper",
    "lowToner",
    "noToner",
    "doorOpen",
    "jammed",
    "offline",
    "serviceRequested",
    "inputTrayMissing",
    "outputTrayMissing",
    "markerSupplyMissing",
    "outputNearFull",
    "outputFull",
    "inputTrayEmpty",
    "overduePreventMaint",
)

# PrtMediaUnitTC: tenThousandthsOfInches(3), micrometers(4); millimetres per unit.
_MM_PER_UNIT = {3: 0.00254, 4: 0.001}
_UNIT_NAMES = {3: "tenThousandthsOfInches", 4: "micrometers"}

# sysUpTime is a TimeTicks (32 bits of hundredths): it wraps after ~497 days.
_TICKS_WRAP = 2**32
_WRAP_SLACK_TICKS = 100 * 60  # a minute of scheduling and clock slack


def decode_error_state(value: bytes) -> list[str]:
    """The error names set in ``value``, in bit order.  Agents may send one byte
    (only the first eight conditions) or none; bits beyond 14 are ignored."""
    return [
        name
        for bit, name in enumerate(ERROR_BITS)
        if bit // 8 < len(value) and value[bit // 8] & (0x80 >> (bit % 8))
    ]


def media_width_mm(width: int | None, unit: int | None) -> float | None:
    """The declared cross-feed width in millimetres; None when the width is one of
    the special values (-1 other, -2 unknown) or the unit is not a length."""
    if width is None or width < 0 or unit not in _MM_PER_UNIT:
        return None
    return round(width * _MM_PER_UNIT[unit], 2)


_LEVEL_SPECIAL = {-1: "unrestricted", -2: "unknown", -3: "some_remaining"}
_MAX_SPECIAL = {-1: "unrestricted", -2: "unknown"}


def _amount(value: int | None, special: Mapping[int, str]) -> tuple[int | None, str]:
    if value is None:
        return None, "unknown"
    if value >= 0:
        return value, "known"
    return None, special.get(value, "unknown")


def supply(description: str | None, level: int | None, max_capacity: int | None) -> dict[str, Any]:
    """One marker supply, the special values spelled out instead of shown as negative
    numbers: level -1 unrestricted, -2 unknown, -3 some remaining; max capacity -1
    unrestricted, -2 unknown.  ``percent`` only when both are known."""
    known_level, level_state = _amount(level, _LEVEL_SPECIAL)
    known_max, max_state = _amount(max_capacity, _MAX_SPECIAL)
    percent = None
    if known_level is not None and known_max:
        percent = min(100, round(known_level * 100 / known_max))
    return {
        "description": description,
        "level": known_level,
        "max": known_max,
        "percent": percent,
        "level_state": level_state,
        "max_state": max_state,
    }


def _text(value: int | bytes | None) -> str | None:
    if not isinstance(value, bytes):
        return None
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = value.decode("latin-1")
    text = "".join(c for c in text if c >= " " and c != "\x7f").strip()
    return text or None


def _int(value: int | bytes | None) -> int | None:
    return value if isinstance(value, int) else None


def _rows(readings: Readings, column_prefix: str) -> dict[tuple[int, ...], int | bytes]:
    """The cells of one column, keyed by their row index (the OID after the column)."""
    prefix = column_prefix + "."
    out: dict[tuple[int, ...], int | bytes] = {}
    for oid, value in readings.items():
        if oid.startswith(prefix):
            try:
                out[tuple(int(x) for x in oid[len(prefix) :].split("."))] = value
            except ValueError:
                continue
    return dict(sorted(out.items()))


def parse_snapshot(readings: Readings) -> dict[str, Any]:
    """The snapshot kept in ``printer_status.parsed``: plain JSON values only."""
    printer_rows = _rows(readings, HR_PRINTER_STATUS)
    error_rows = _rows(readings, HR_PRINTER_ERROR_STATE)
    device = next(iter(printer_rows or error_rows), (None,))[0]
    key = (device,) if device is not None else ()
    state = PRINTER_STATUS.get(_int(printer_rows.get(key)) or 0) if printer_rows else None
    errors_raw = error_rows.get(key)
    device_status_raw = _int(_rows(readings, HR_DEVICE_STATUS).get(key))
    return {
        "description": _text(readings.get(SYS_DESCR)),
        "uptime_ticks": _int(readings.get(SYS_UPTIME)),
        "device_index": device,
        "state": state,
        "device_status": DEVICE_STATUS.get(device_status_raw or 0),
        "errors": decode_error_state(errors_raw) if isinstance(errors_raw, bytes) else [],
        "media": _media(readings, device),
        "supplies": _supplies(readings, device),
    }


def _media(readings: Readings, device: int | None) -> dict[str, Any] | None:
    columns = {
        c: _rows(readings, f"{PRT_INPUT_ENTRY}.{c}")
        for c in (_INPUT_DIM_UNIT, _INPUT_XFEED, _INPUT_MEDIA_NAME, _INPUT_MEDIA_TYPE)
    }
    indexes = sorted({index for rows in columns.values() for index in rows})
    if not indexes:
        return None
    # The device's first input; a label printer has exactly one.
    row = next((i for i in indexes if i[0] == device), indexes[0])
    unit = _int(columns[_INPUT_DIM_UNIT].get(row))
    width = _int(columns[_INPUT_XFEED].get(row))
    return {
        "name": _text(columns[_INPUT_MEDIA_NAME].get(row)),
        "type": _text(columns[_INPUT_MEDIA_TYPE].get(row)),
        "width": width if width is not None and width >= 0 else None,
        "width_unit": _UNIT_NAMES.get(unit or 0),
        "width_mm": media_width_mm(width, unit),
    }


def _supplies(readings: Readings, device: int | None) -> list[dict[str, Any]]:
    columns = {
        c: _rows(readings, f"{PRT_SUPPLIES_ENTRY}.{c}")
        for c in (_SUPPLY_DESCRIPTION, _SUPPLY_MAX, _SUPPLY_LEVEL)
    }
    indexes = sorted({index for rows in columns.values() for index in rows})
    if device is not None and any(i[0] == device for i in indexes):
        indexes = [i for i in indexes if i[0] == device]
    return [
        supply(
            _text(columns[_SUPPLY_DESCRIPTION].get(i)),
            _int(columns[_SUPPLY_LEVEL].get(i)),
            _int(columns[_SUPPLY_MAX].get(i)),
        )
        for i in indexes
    ]


def rebooted(
    before_ticks: int | None, before_at: datetime | None, ticks: int | None, at: datetime
) -> bool:
    """Whether sysUpTime went backwards between two successful probes: the agent
    restarted.  A counter that merely wrapped around 2**32 is not a reboot."""
    if before_ticks is None or before_at is None or ticks is None or ticks >= before_ticks:
        return False
    expected = before_ticks + max(0.0, (at - before_at).total_seconds()) * 100
    wrapped = expected >= _TICKS_WRAP and ticks <= expected - _TICKS_WRAP + _WRAP_SLACK_TICKS
    return not wrapped


_COMPARED = ("state", "device_status", "media")


def _status_of(row: StatusRow | None) -> tuple[Any, ...] | None:
    if row is None:
        return None
    parsed = row.parsed or {}
    return (
        row.online,
        *(parsed.get(name) for name in _COMPARED),
        frozenset(parsed.get("errors") or ()),
    )


def transition(write: StatusWrite) -> dict[str, Any] | None:
    """The ``printer.status`` data for a status write, or None when nothing an
    observer cares about changed (online, printer state, device status, error set,
    media; or a reboot).  Supplies and uptime alone never make an event."""
    previous, current = write.previous, write.current
    restarted = (
        current.online
        and previous is not None
        and previous.parsed is not None
        and current.parsed is not None
        and rebooted(
            previous.parsed.get("uptime_ticks"),
            previous.last_success_at,
            current.parsed.get("uptime_ticks"),
            current.captured_at,
        )
    )
    if not restarted and _status_of(previous) == _status_of(current):
        return None
    return event_data(current, rebooted=bool(restarted))


def event_data(row: StatusRow, *, rebooted: bool = False) -> dict[str, Any]:
    parsed = row.parsed or {}
    data: dict[str, Any] = {
        "printer_id": str(row.printer_id),
        "online": row.online,
        "state": parsed.get("state"),
        "device_status": parsed.get("device_status"),
        "errors": list(parsed.get("errors") or []),
        "media": parsed.get("media"),
        "captured_at": format_time(row.captured_at),
        "last_success_at": format_time(row.last_success_at) if row.last_success_at else None,
    }
    if not row.online:
        data["last_error"] = row.last_error
    if rebooted:
        data["rebooted"] = True
    return data

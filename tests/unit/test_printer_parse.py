"""The probe's pure decoding, as tables: RFC 2790 error bits (most significant bit
first, both bytes, one byte valid), supply special values, media width units,
reboot detection, the snapshot from raw readings and when a write is an event."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from herald.journal.printers.store import StatusRow, StatusWrite
from herald.workers.printers.parse import (
    ERROR_BITS,
    decode_error_state,
    media_width_mm,
    parse_snapshot,
    rebooted,
    supply,
    transition,
)

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "names"),
    [
        (b"", []),
        (b"\x00", []),
        (b"\x00\x00", []),
        (b"\x80", ["lowPaper"]),
        (b"\x40", ["noPaper"]),
        (b"\x01", ["serviceRequested"]),
        (b"\x48", ["noPaper", "doorOpen"]),  # one byte is a valid value
        (b"\x00\x80", ["inputTrayMissing"]),
        (b"\x00\x40", ["outputTrayMissing"]),
        (b"\x00\x20", ["markerSupplyMissing"]),
        (b"\x00\x10", ["outputNearFull"]),  # the bit a shifted table loses
        (b"\x00\x08", ["outputFull"]),
        (b"\x00\x04", ["inputTrayEmpty"]),
        (b"\x00\x02", ["overduePreventMaint"]),
        (b"\x00\x01", []),  # bit 15 is not defined
        (b"\x48\x14", ["noPaper", "doorOpen", "outputNearFull", "inputTrayEmpty"]),
        (b"\xff\xff", list(ERROR_BITS)),
        (b"\x00\x00\xff", []),  # bits beyond the defined ones are ignored
    ],
)
def test_error_state_bits_most_significant_first(value: bytes, names: list[str]) -> None:
    assert decode_error_state(value) == names


def test_every_error_bit_decodes_to_its_own_name() -> None:
    assert len(ERROR_BITS) == 15
    for bit, name in enumerate(ERROR_BITS):
        value = bytearray(2)
        value[bit // 8] = 0x80 >> (bit % 8)
        assert decode_error_state(bytes(value)) == [name]


@pytest.mark.parametrize(
    ("level", "maximum", "expected"),
    [
        (80, 100, (80, 100, 80, "known", "known")),
        (0, 100, (0, 100, 0, "known", "known")),
        (150, 100, (150, 100, 100, "known", "known")),
        (-3, 100, (None, 100, None, "some_remaining", "known")),
        (-2, -2, (None, None, None, "unknown", "unknown")),
        (-1, -1, (None, None, None, "unrestricted", "unrestricted")),
        (5, 0, (5, 0, None, "known", "known")),  # no percentage of nothing
        (-7, 10, (None, 10, None, "unknown", "known")),  # undefined negatives
        (None, None, (None, None, None, "unknown", "unknown")),
    ],
)
def test_supply_special_values(
    level: int | None, maximum: int | None, expected: tuple[Any, ...]
) -> None:
    s = supply("toner", level, maximum)
    assert (s["level"], s["max"], s["percent"], s["level_state"], s["max_state"]) == expected


@pytest.mark.parametrize(
    ("width", "unit", "mm"),
    [
        (12000, 4, 12.0),  # micrometers
        (24000, 4, 24.0),
        (4724, 3, 12.0),  # ten-thousandths of an inch
        (-1, 4, None),  # other
        (-2, 3, None),  # unknown
        (12000, 8, None),  # not a length unit
        (None, 4, None),
    ],
)
def test_media_width_in_millimetres(width: int | None, unit: int | None, mm: float | None) -> None:
    assert media_width_mm(width, unit) == mm


@pytest.mark.parametrize(
    ("before", "after", "elapsed_s", "expected"),
    [
        (None, 100, 30, False),  # nothing to compare with
        (1000, 4000, 30, False),  # went forwards
        (1000, 1000, 30, False),  # a frozen clock is not a reboot
        (8_640_000, 3000, 30, True),  # went backwards: restarted
        (8_640_000, 8_639_999, 0, True),
        (2**32 - 1000, 2000, 30, False),  # TimeTicks wrapped around 2**32
        (2**32 - 1000, 2**31, 30, True),  # far below where a wrap would land
    ],
)
def test_reboot_is_sysuptime_going_backwards(
    before: int | None, after: int, elapsed_s: float, expected: bool
) -> None:
    assert rebooted(before, T0, after, T0 + timedelta(seconds=elapsed_s)) is expected


def _readings(device: int = 2, errors: bytes = b"\x00") -> dict[str, int | bytes]:
    return {
        "1.3.6.1.2.1.1.1.0": b"Brother PT-P750W",
        "1.3.6.1.2.1.1.3.0": 8_640_000,
        "1.3.6.1.2.1.25.3.2.1.5.1": 2,
        f"1.3.6.1.2.1.25.3.2.1.5.{device}": 5,
        f"1.3.6.1.2.1.25.3.5.1.1.{device}": 4,
        f"1.3.6.1.2.1.25.3.5.1.2.{device}": errors,
        f"1.3.6.1.2.1.43.8.2.1.3.{device}.1": 4,
        f"1.3.6.1.2.1.43.8.2.1.5.{device}.1": 12000,
        f"1.3.6.1.2.1.43.8.2.1.12.{device}.1": b"12mm TZe",
        f"1.3.6.1.2.1.43.8.2.1.21.{device}.1": b"laminated",
        f"1.3.6.1.2.1.43.11.1.1.6.{device}.1": b"tape",
        f"1.3.6.1.2.1.43.11.1.1.8.{device}.1": -2,
        f"1.3.6.1.2.1.43.11.1.1.9.{device}.1": -3,
    }


def test_snapshot_reads_the_printer_device_row_not_index_one() -> None:
    parsed = parse_snapshot(_readings(device=2, errors=b"\x48\x10"))
    assert parsed["device_index"] == 2
    assert parsed["state"] == "printing"
    assert parsed["device_status"] == "down"  # device 2's, not the NIC's "running"
    assert parsed["errors"] == ["noPaper", "doorOpen", "outputNearFull"]
    assert parsed["uptime_ticks"] == 8_640_000
    assert parsed["description"] == "Brother PT-P750W"
    # The media *name* is prtInputMediaName; the media *type* is its own column.
    assert parsed["media"] == {
        "name": "12mm TZe",
        "type": "laminated",
        "width": 12000,
        "width_unit": "micrometers",
        "width_mm": 12.0,
    }
    assert parsed["supplies"][0]["level_state"] == "some_remaining"


def test_snapshot_of_an_agent_without_printer_tables() -> None:
    parsed = parse_snapshot({"1.3.6.1.2.1.1.3.0": 5, "1.3.6.1.2.1.1.1.0": b"\xff\xfeodd"})
    assert parsed["state"] is None and parsed["errors"] == [] and parsed["media"] is None
    assert parsed["supplies"] == [] and parsed["uptime_ticks"] == 5
    assert parsed["description"] == "ÿþodd"  # not UTF-8: read as Latin-1


PID = uuid.UUID("00000000-0000-0000-0000-000000000001")
IDLE = {
    "state": "idle",
    "device_status": "running",
    "errors": [],
    "media": {"name": "12mm"},
    "uptime_ticks": 1000,
    "supplies": [],
}


def _row(online: bool, parsed: dict[str, Any] | None, at: datetime, ok_at: datetime | None) -> Any:
    return StatusRow(PID, parsed, online, at, ok_at, None if online else "timeout")


def _ok(parsed: dict[str, Any], at: datetime) -> StatusRow:
    return _row(True, parsed, at, at)


T1 = T0 + timedelta(seconds=30)


@pytest.mark.parametrize(
    ("previous", "current", "event"),
    [
        (None, _ok(IDLE, T1), {"online": True, "state": "idle"}),  # first probe
        (_ok(IDLE, T0), _ok({**IDLE, "uptime_ticks": 4000}, T1), None),  # nothing changed
        (_ok(IDLE, T0), _ok({**IDLE, "supplies": [{"level": 1}]}, T1), None),  # supplies
        (_ok(IDLE, T0), _ok({**IDLE, "uptime_ticks": 4000, "state": "printing"}, T1), {}),
        (_ok(IDLE, T0), _ok({**IDLE, "uptime_ticks": 4000, "device_status": "down"}, T1), {}),
        (_ok(IDLE, T0), _ok({**IDLE, "uptime_ticks": 4000, "errors": ["jammed"]}, T1), {}),
        (_ok(IDLE, T0), _ok({**IDLE, "uptime_ticks": 4000, "media": {"name": "24mm"}}, T1), {}),
        (_ok(IDLE, T0), _row(False, IDLE, T1, T0), {"online": False, "last_error": "timeout"}),
        (_row(False, IDLE, T0, T0), _row(False, IDLE, T1, T0), None),  # still offline
        (_row(False, None, T0, None), _row(False, None, T1, None), None),
        (_row(False, IDLE, T0, T0), _ok({**IDLE, "uptime_ticks": 2000}, T1), {"online": True}),
        (_ok(IDLE, T0), _ok({**IDLE, "uptime_ticks": 10}, T1), {"rebooted": True}),
        (_row(False, IDLE, T0, T0), _ok({**IDLE, "uptime_ticks": 10}, T1), {"rebooted": True}),
    ],
)
def test_an_event_only_when_the_status_changed(
    previous: StatusRow | None, current: StatusRow, event: dict[str, Any] | None
) -> None:
    data = transition(StatusWrite(previous, current))
    if event is None:
        assert data is None
        return
    assert data is not None
    assert {k: data[k] for k in event} == event
    assert data["printer_id"] == str(PID) and data["captured_at"] == "2026-11-22T10:00:30.000Z"
    assert ("rebooted" in data) == ("rebooted" in event)
    assert ("last_error" in data) == (not current.online)

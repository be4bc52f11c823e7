"""A printer's identity: the deterministic UUIDv5 id, host normalisation, the
registration rules (any host, loopback and private included) and HERALD_PRINTERS."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from herald.journal.printers.keys import probe_claim_key
from herald.journal.printers.spec import PRINTER_NAMESPACE, PrinterSpec, printer_id
from herald.journal.runtime.settings import Settings, SettingsError


def test_the_id_is_a_uuid5_of_lowercased_model_host_and_port() -> None:
    expected = uuid.uuid5(PRINTER_NAMESPACE, "pt-p750w|192.168.1.20|161")
    assert printer_id("PT-P750W", "192.168.1.20", 161) == expected
    assert expected.version == 5
    # The namespace is fixed: the same printer has this id on every replica, forever.
    assert str(expected) == "bf2ea43e-486e-529e-8a9e-4da2a2c9697b"


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (("PT-P750W", "10.0.0.5", 161), ("pt-p750w", "10.0.0.5", 161), True),
        ((" PT-P750W ", "10.0.0.5", 161), ("pt-p750w", "10.0.0.5", 161), True),
        (("PT-P750W", "Printer.LAN.", 161), ("PT-P750W", "printer.lan", 161), True),
        (("PT-P750W", "::0001", 161), ("PT-P750W", "::1", 161), True),
        (("PT-P750W", "[::1]", 161), ("PT-P750W", "::1", 161), True),
        (("PT-P750W", "10.0.0.5", 161), ("PT-P750W", "10.0.0.5", 1161), False),
        (("PT-P750W", "10.0.0.5", 161), ("PT-P900W", "10.0.0.5", 161), False),
        (("PT-P750W", "10.0.0.5", 161), ("PT-P750W", "10.0.0.6", 161), False),
    ],
)
def test_same_printer_same_id(a: tuple[str, str, int], b: tuple[str, str, int], same: bool) -> None:
    assert (printer_id(*a) == printer_id(*b)) is same


@pytest.mark.parametrize("host", ["127.0.0.1", "10.1.2.3", "192.168.0.9", "169.254.1.1", "::1"])
def test_any_address_is_accepted_loopback_and_private_included(host: str) -> None:
    spec = PrinterSpec(name="Label", model="PT-P750W", host=host)
    assert (spec.port, spec.community) == (161, "public")
    assert spec.id == printer_id("PT-P750W", host, 161)


@pytest.mark.parametrize(
    "fields",
    [
        {"host": "not a host"},
        {"host": "bad_host"},
        {"host": ""},
        {"port": 0},
        {"port": 65536},
        {"port": "161"},  # strict: a number, not a string
        {"name": "   "},
        {"name": "tab\there"},
        {"community": "x\x00"},
        {"extra": 1},
    ],
)
def test_invalid_registrations_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PrinterSpec.model_validate({"name": "Label", "model": "PT", "host": "10.0.0.1", **fields})


def test_herald_printers_is_parsed_once_and_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "HERALD_PRINTERS",
        '[{"name": "Front desk", "model": "PT-P750W", "host": "10.0.0.7", "port": 1161}]',
    )
    (spec,) = Settings.load().printers
    assert (spec.name, spec.port, spec.community) == ("Front desk", 1161, "public")
    monkeypatch.setenv("HERALD_PRINTERS", '[{"name": "x", "model": "PT", "host": "a b"}]')
    with pytest.raises(SettingsError, match=r"HERALD_PRINTERS at 0\.host"):
        Settings.load()


def test_probe_timeout_must_be_below_the_interval() -> None:
    with pytest.raises(SettingsError, match="PRINTER_PROBE_TIMEOUT_S must be below"):
        Settings.load(printer_probe_interval_s=5, printer_probe_timeout_s=5)
    with pytest.raises(SettingsError, match="PRINTER_STALE_S must not be below"):
        Settings.load(printer_fresh_s=90, printer_stale_s=60)


def test_claim_keys_are_per_printer_with_a_hash_tag() -> None:
    pid = printer_id("PT", "10.0.0.1", 161)
    assert probe_claim_key(pid) == f"herald:{{p:{pid}}}:probe"

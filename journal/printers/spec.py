"""What identifies a printer: its registration fields and the id derived from them.

The id is a UUIDv5, under Herald's fixed printer namespace, of
``"<model lower-cased>|<host>|<port>"``: the same printer gets the same id on every
replica, after every restart and on every re-registration, without a lookup.  The
host is normalised first (an IP address in its canonical form, a host name in lower
case), so ``PRINTER.lan`` and ``printer.lan`` are one printer.

Printers are registered by admins and sit on private LAN addresses, so any host is
accepted here, loopback and private ranges included: the SSRF rules for URLs users
supply do not apply to them.
"""

from __future__ import annotations

import ipaddress
import re
import uuid

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "PRINTER_NAMESPACE",
    "PrinterSpec",
    "normalise_host",
    "printable",
    "printable_label",
    "printer_id",
]

PRINTER_NAMESPACE = uuid.UUID("424b3157-69e3-4306-9604-39f9cdd8fc98")

# RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")


def normalise_host(host: str) -> str:
    """The canonical spelling of ``host``; ``ValueError`` if it is neither an IP
    address nor a host name."""
    text = host.strip()
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    if len(text) > 253 or not HOSTNAME_RE.fullmatch(text):
        raise ValueError("must be an IP address or a host name")
    return text.rstrip(".").lower()


def printable(value: str) -> str:
    """``value`` unchanged; ``ValueError`` if it holds control characters."""
    if any(c < " " or c == "\x7f" for c in value):
        raise ValueError("must be printable text")
    return value


def printable_label(value: str) -> str:
    """``value`` trimmed; ``ValueError`` if that is blank or not printable."""
    cleaned = printable(value.strip())
    if not cleaned:
        raise ValueError("must not be blank")
    return cleaned


def printer_id(model: str, host: str, port: int) -> uuid.UUID:
    """The deterministic id of the printer ``model`` at ``host:port``."""
    return uuid.uuid5(PRINTER_NAMESPACE, f"{model.strip().lower()}|{normalise_host(host)}|{port}")


class PrinterSpec(BaseModel):
    """A printer as registered (``POST /api/printers``, ``HERALD_PRINTERS``)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(min_length=1, max_length=200)
    model: str = Field(min_length=1, max_length=200)
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(161, ge=1, le=65535)
    community: str = Field("public", min_length=1, max_length=255)

    _labels = field_validator("name", "model")(printable_label)
    _host = field_validator("host")(normalise_host)
    _community = field_validator("community")(printable)

    @property
    def id(self) -> uuid.UUID:
        return printer_id(self.model, self.host, self.port)

"""The printer probe (SNMP): ``PrinterProbe`` runs in ``herald worker`` processes
and in ``herald serve``'s in-process worker; ``parse`` holds its pure decoding."""

from __future__ import annotations

from herald.workers.printers.probe import PrinterProbe
from herald.workers.printers.snmp import SnmpError, SnmpReader

__all__ = ["PrinterProbe", "SnmpError", "SnmpReader"]

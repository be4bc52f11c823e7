"""Printers probed over SNMP: their registration, id, Redis keys and status cache.

Shared by the API (registration, status reads) and the probe in ``workers``
(status writes); the probe itself lives in ``herald.workers.printers``.  The
database access is ``herald.journal.printers.store`` (not re-exported here: the
settings import ``spec``, and the store imports the settings).
"""

from __future__ import annotations

from herald.journal.printers.keys import EVENT_SOURCE, STATUS_EVENT, TOPIC, probe_claim_key
from herald.journal.printers.spec import PRINTER_NAMESPACE, PrinterSpec, printer_id

__all__ = [
    "EVENT_SOURCE",
    "PRINTER_NAMESPACE",
    "STATUS_EVENT",
    "TOPIC",
    "PrinterSpec",
    "printer_id",
    "probe_claim_key",
]

"""Every Redis key and stream name of the printer probe, in one place.

::

    herald:{p:<printer id>}:probe   the probe claim: set with NX and a TTL of one probe
                                    interval by the process that probes the printer in
                                    this interval (value: that process's name)

Events go to the shared topic ``printers`` (type ``printer.status``), through the
journal like every other producer.
"""

from __future__ import annotations

import uuid

__all__ = ["EVENT_SOURCE", "STATUS_EVENT", "TOPIC", "probe_claim_key"]

TOPIC = "printers"
STATUS_EVENT = "printer.status"
EVENT_SOURCE = "/workers/printers"


def probe_claim_key(printer: uuid.UUID) -> str:
    return f"herald:{{p:{printer}}}:probe"

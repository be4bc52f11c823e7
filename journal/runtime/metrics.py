"""Prometheus metrics, one definition each (DESIGN §7).

Labels are low-cardinality only: event type *prefixes*, route templates, task
kinds, outcomes and reasons.  Never a user id, message id or task id.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "ENVELOPES_DELIVERED",
    "ENVELOPES_PUBLISHED",
    "GAPS",
    "HTTP_REQUESTS",
    "HUB_RECONNECTS",
    "KNOWN_TYPE_PREFIXES",
    "MAINTENANCE_RUNS",
    "MAINTENANCE_RUN_SECONDS",
    "MEMBER_LOOKUPS",
    "PRINTER_PROBES",
    "PRINTER_PROBE_SECONDS",
    "REPLAYS",
    "REPLAY_DENIALS",
    "RETENTION_DELETED",
    "SSE_CONNECTIONS",
    "TASKS",
    "TASK_SECONDS",
    "WRITER_BACKLOG",
    "WRITER_FAILURES",
    "WRITER_FLUSH_ROWS",
    "WRITER_FLUSH_SECONDS",
    "WRITER_OVERLOADED",
    "WRITER_POISON_ROWS",
    "count_published",
    "type_prefix",
]

ENVELOPES_PUBLISHED = Counter(
    "herald_envelopes_published", "Envelopes published, by type prefix.", ["type_prefix"]
)
ENVELOPES_DELIVERED = Counter(
    "herald_envelopes_delivered",
    "Envelopes written to SSE clients (replayed or live).",
    ["endpoint"],
)
GAPS = Counter("herald_gap_signals", "herald.gap envelopes sent to clients.", ["reason"])
SSE_CONNECTIONS = Gauge("herald_sse_connections", "Open SSE connections.", ["endpoint"])
REPLAYS = Counter("herald_replays", "Connects or history reads that replayed past events.")
REPLAY_DENIALS = Counter("herald_replay_denials", "Requests refused by the replay budget (429).")
HUB_RECONNECTS = Counter("herald_hub_reconnects", "Times the pub/sub hub reconnected to Redis.")

WRITER_FLUSH_ROWS = Histogram(
    "herald_writer_flush_rows",
    "Rows written per message-writer flush.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
)
WRITER_FLUSH_SECONDS = Histogram(
    "herald_writer_flush_seconds",
    "Duration of one message-writer flush.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
WRITER_FAILURES = Counter("herald_writer_flush_failures", "Message-writer flushes that failed.")
WRITER_OVERLOADED = Counter(
    "herald_writer_overloaded", "Emits refused because the writer's buffer was full."
)
WRITER_POISON_ROWS = Counter(
    "herald_writer_poison_rows",
    "Message events the database refused for their content, dropped so others are stored.",
)
WRITER_BACKLOG = Gauge(
    "herald_writer_backlog", "Events buffered by message writers, not yet flushed."
)

MEMBER_LOOKUPS = Counter(
    "herald_member_lookups",
    "Member verifications, by outcome: verified, cached, or the failure's code.",
    ["outcome"],
)
TASKS = Counter("herald_tasks", "Task attempts finished, by kind and outcome.", ["kind", "outcome"])
TASK_SECONDS = Histogram(
    "herald_task_seconds", "Task attempt duration, by kind and outcome.", ["kind", "outcome"]
)
# Outcomes: success, timeout, failure (the printer answered wrongly or not at all),
# error (Herald's own fault: the cache write or the publish failed).
PRINTER_PROBES = Counter("herald_printer_probes", "Printer probes, by outcome.", ["outcome"])
PRINTER_PROBE_SECONDS = Histogram(
    "herald_printer_probe_seconds",
    "Duration of one printer probe (SNMP only), by outcome.",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MAINTENANCE_RUNS = Counter(
    "herald_maintenance_runs",
    "Maintenance runs finished or skipped, by job type and status.",
    ["job_type", "status"],
)
MAINTENANCE_RUN_SECONDS = Histogram(
    "herald_maintenance_run_seconds",
    "Duration of maintenance runs, by job type and status.",
    ["job_type", "status"],
    buckets=(0.01, 0.05, 0.25, 1, 5, 15, 60, 300, 900, 3600),
)
RETENTION_DELETED = Counter(
    "herald_retention_deleted",
    "Rows and stream entries removed by retention, by what they were.",
    ["what"],
)
HTTP_REQUESTS = Counter(
    "herald_http_requests",
    "HTTP requests, by route template, method and status.",
    ["route", "method", "status"],
)


# The first parts of the types Herald's own producers publish (DESIGN §2); any other
# counts as ``other``, so publishers cannot grow the label set.
KNOWN_TYPE_PREFIXES = frozenset(
    {
        "attachment",
        "herald",
        "maintenance",
        "mcp",
        "member",
        "message",
        "page_event",
        "printer",
        "source",
        "task",
    }
)


def type_prefix(event_type: str) -> str:
    """``source.ingest.progress`` → ``source``; a prefix Herald does not know → ``other``."""
    prefix = event_type.split(".", 1)[0]
    return prefix if prefix in KNOWN_TYPE_PREFIXES else "other"


def count_published(event_types: Iterable[str]) -> None:
    """Count newly published envelopes (not idempotent repeats): one ``inc`` per prefix."""
    for prefix, n in Tally(map(type_prefix, event_types)).items():
        ENVELOPES_PUBLISHED.labels(prefix).inc(n)

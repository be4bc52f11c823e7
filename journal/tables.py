"""SQLAlchemy table metadata, with a naming convention so alembic's constraint
names are stable and predictable across databases.

Every timestamp is ``timestamptz`` and every default is the database's ``now()``,
which is UTC-aware: there is no naive datetime anywhere in the schema.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

__all__ = [
    "attachments",
    "chunks",
    "maintenance_jobs",
    "maintenance_runs",
    "message_events",
    "messages",
    "metadata",
    "oauth_tokens",
    "page_event_transitions",
    "page_events",
    "printer_status",
    "printers",
    "source_files",
    "sources",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _created() -> Column[object]:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


def _updated() -> Column[object]:
    return Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now())


# Chat message streams (DESIGN §5): one row per answer, its events keyed by sequence.
messages = Table(
    "messages",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", Text, nullable=False, index=True),
    Column("status", Text, nullable=False, server_default="streaming"),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    _created(),
    _updated(),
    CheckConstraint("status IN ('streaming', 'complete', 'failed')", name="status"),
)

message_events = Table(
    "message_events",
    metadata,
    Column(
        "message_id",
        UUID(as_uuid=True),
        ForeignKey("messages.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("sequence_no", Integer, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    _created(),
    PrimaryKeyConstraint("message_id", "sequence_no"),
    Index("ix_message_events_created_at", "created_at"),
)

# Ingested sources (uploads and connector directories) and their chunks.
sources = Table(
    "sources",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", Text, nullable=False, index=True),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),  # upload | connector
    Column("location", Text),  # the connector's directory
    Column("status", Text, nullable=False, server_default="queued"),
    Column("chunk_count", Integer, nullable=False, server_default="0"),
    Column("token_count", Integer, nullable=False, server_default="0"),
    Column("limited", Boolean, nullable=False, server_default="false"),
    Column("error", Text),
    _created(),
    _updated(),
    CheckConstraint("kind IN ('upload', 'connector')", name="kind"),
    CheckConstraint("status IN ('queued', 'ingesting', 'ready', 'failed')", name="status"),
)

source_files = Table(
    "source_files",
    metadata,
    Column(
        "source_id",
        UUID(as_uuid=True),
        ForeignKey("sources.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("path", Text, nullable=False),
    Column("content_type", Text, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("content", LargeBinary),  # uploads keep their bytes; connectors read the directory
    _created(),
    _updated(),
    PrimaryKeyConstraint("source_id", "path"),
)

chunks = Table(
    "chunks",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column(
        "source_id",
        UUID(as_uuid=True),
        ForeignKey("sources.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("path", Text, nullable=False),
    Column("ordinal", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("token_count", Integer, nullable=False),
    _created(),
    UniqueConstraint("source_id", "path", "ordinal"),
)

attachments = Table(
    "attachments",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", Text, nullable=False, index=True),
    Column("filename", Text, nullable=False),
    Column("content_type", Text, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("text", Text),
    Column("token_count", Integer),
    Column("status", Text, nullable=False, server_default="queued"),
    Column("error", Text),
    _created(),
    _updated(),
    CheckConstraint("status IN ('queued', 'processing', 'ready', 'failed')", name="status"),
)

# OAuth tokens for MCP servers, encrypted at rest (never stored in clear).
oauth_tokens = Table(
    "oauth_tokens",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("server_url", Text, nullable=False),
    Column("token_ciphertext", LargeBinary, nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("scope", Text),
    _created(),
    _updated(),
    UniqueConstraint("user_id", "server_url"),
)

# Printers probed over SNMP (DESIGN §9).  The id is derived from (model, host, port),
# so a printer keeps it across restarts, re-registrations and replicas.
printers = Table(
    "printers",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("host", Text, nullable=False),
    Column("port", Integer, nullable=False),
    Column("community", Text, nullable=False),
    _created(),
    _updated(),
    CheckConstraint("port BETWEEN 1 AND 65535", name="port"),
)

# The probe's cache: the last attempt (captured_at, online, last_error) and the last
# success (last_success_at, parsed) kept apart, so an offline printer never looks fresh.
printer_status = Table(
    "printer_status",
    metadata,
    Column(
        "printer_id",
        UUID(as_uuid=True),
        ForeignKey("printers.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("parsed", JSONB),  # the last successful snapshot; NULL until one succeeded
    Column("online", Boolean, nullable=False),
    Column("captured_at", DateTime(timezone=True), nullable=False),
    Column("last_success_at", DateTime(timezone=True)),
    Column("last_error", Text),
    _updated(),
)

# Maintenance (DESIGN §9): jobs on a cron schedule and their runs.  UNIQUE (job_id,
# scheduled_for) makes "exactly one run per tick" the database's decision; the
# partial unique index keeps a job from running twice at once.
maintenance_jobs = Table(
    "maintenance_jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", Text, nullable=False, unique=True),
    Column("job_type", Text, nullable=False),
    Column("schedule_cron", Text),  # null: runs only when asked to
    Column("timezone", Text, nullable=False, server_default="UTC"),
    Column("enabled", Boolean, nullable=False, server_default="true"),
    Column("visible_in_ui", Boolean, nullable=False, server_default="true"),
    Column("params", JSONB, nullable=False, server_default="{}"),
    _created(),
    _updated(),
)

maintenance_runs = Table(
    "maintenance_runs",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column(
        "job_id",
        Integer,
        ForeignKey("maintenance_jobs.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("trigger", Text, nullable=False),
    Column("scheduled_for", DateTime(timezone=True)),  # the cron tick; null for manual runs
    Column("status", Text, nullable=False),
    Column("message", Text),
    Column("result", JSONB),
    _created(),  # when the run was claimed (or recorded as skipped)
    Column("started_at", DateTime(timezone=True)),  # when a worker began it
    Column("finished_at", DateTime(timezone=True)),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("job_id", "scheduled_for"),
    CheckConstraint("trigger IN ('scheduled', 'manual')", name="trigger"),
    CheckConstraint("status IN ('running', 'success', 'failed', 'skipped')", name="status"),
    CheckConstraint("(trigger = 'manual') = (scheduled_for IS NULL)", name="tick"),
    Index(
        "uq_maintenance_runs_one_running",
        "job_id",
        unique=True,
        postgresql_where=text("status = 'running'"),
    ),
    Index("ix_maintenance_runs_created_at", "created_at"),
    Index("ix_maintenance_runs_job_id_created_at", "job_id", "created_at"),
)

# Page events (DESIGN §9): runtime configuration per page route with a time window.
# A window's opening or closing is announced once: the claim's primary key makes
# the database decide which process publishes it (insert wins).
page_events = Table(
    "page_events",
    metadata,
    Column("uid", UUID(as_uuid=True), primary_key=True),
    Column("name", Text, nullable=False),
    Column("description", Text),
    Column("page_context", Text, nullable=False, index=True),
    Column("filters", JSONB, nullable=False, server_default="{}"),
    Column("limit", Integer),
    Column("is_active", Boolean, nullable=False, server_default="true"),
    Column("start_date", DateTime(timezone=True), index=True),  # null: since ever
    Column("end_date", DateTime(timezone=True), index=True),  # null: for ever
    Column("created_by", Text, nullable=False),
    _created(),
    _updated(),
    CheckConstraint(
        "start_date IS NULL OR end_date IS NULL OR start_date < end_date", name="window"
    ),
    CheckConstraint('"limit" IS NULL OR "limit" >= 1', name="limit"),
)

page_event_transitions = Table(
    "page_event_transitions",
    metadata,
    Column(
        "event_uid",
        UUID(as_uuid=True),
        ForeignKey("page_events.uid", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("change", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),  # the start_date / end_date passed
    Column("claimed_by", Text, nullable=False),
    Column("claimed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("event_uid", "change", "at"),
    CheckConstraint("change IN ('window_opened', 'window_closed')", name="change"),
)

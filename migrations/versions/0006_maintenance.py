"""Maintenance jobs and their runs, with the two retention jobs seeded.

``retention_cleanup_nightly`` runs every retention job type daily at 03:00 UTC;
``retention_cleanup_manual`` has no schedule and is hidden from the UI: it is what
"run retention now" (``POST /api/maintenance/retention/run``) starts.  Seeding is
idempotent: an existing job of either key is left as it is.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _timestamp(name: str) -> sa.Column[object]:
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "maintenance_jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("job_type", sa.Text(), nullable=False),
        sa.Column("schedule_cron", sa.Text(), nullable=True),
        sa.Column("timezone", sa.Text(), server_default="UTC", nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("visible_in_ui", sa.Boolean(), server_default="true", nullable=False),
        sa.Column(
            "params", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_maintenance_jobs")),
        sa.UniqueConstraint("key", name=op.f("uq_maintenance_jobs_key")),
    )
    op.create_table(
        "maintenance_runs",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        _timestamp("created_at"),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        _timestamp("heartbeat_at"),
        sa.CheckConstraint(
            "trigger IN ('scheduled', 'manual')", name=op.f("ck_maintenance_runs_trigger")
        ),
        sa.CheckConstraint(
            "status IN ('running', 'success', 'failed', 'skipped')",
            name=op.f("ck_maintenance_runs_status"),
        ),
        sa.CheckConstraint(
            "(trigger = 'manual') = (scheduled_for IS NULL)", name=op.f("ck_maintenance_runs_tick")
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["maintenance_jobs.id"],
            name=op.f("fk_maintenance_runs_job_id_maintenance_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_maintenance_runs")),
        sa.UniqueConstraint(
            "job_id", "scheduled_for", name=op.f("uq_maintenance_runs_job_id_scheduled_for")
        ),
    )
    op.create_index(
        "uq_maintenance_runs_one_running",
        "maintenance_runs",
        ["job_id"],
        unique=True,
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_index(
        op.f("ix_maintenance_runs_created_at"), "maintenance_runs", ["created_at"], unique=False
    )
    op.create_index(
        op.f("ix_maintenance_runs_job_id_created_at"),
        "maintenance_runs",
        ["job_id", "created_at"],
        unique=False,
    )
    op.execute(
        """
        INSERT INTO maintenance_jobs
            (key, job_type, schedule_cron, timezone, enabled, visible_in_ui)
        VALUES ('retention_cleanup_nightly', 'retention_cleanup', '0 3 * * *', 'UTC', true, true),
               ('retention_cleanup_manual', 'retention_cleanup', NULL, 'UTC', true, false)
        ON CONFLICT (key) DO NOTHING
        """
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_maintenance_runs_job_id_created_at"), table_name="maintenance_runs")
    op.drop_index(op.f("ix_maintenance_runs_created_at"), table_name="maintenance_runs")
    op.drop_index("uq_maintenance_runs_one_running", table_name="maintenance_runs")
    op.drop_table("maintenance_runs")
    op.drop_table("maintenance_jobs")

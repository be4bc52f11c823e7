"""Page events: runtime configuration per page route with an active window, and
the claims that announce each window opening or closing exactly once.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _timestamp(name: str) -> sa.Column[object]:
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "page_events",
        sa.Column("uid", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("page_context", sa.Text(), nullable=False),
        sa.Column(
            "filters", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("limit", sa.Integer(), nullable=True),
        sa.Column("is_active", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("start_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.Text(), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.CheckConstraint(
            "start_date IS NULL OR end_date IS NULL OR start_date < end_date",
            name=op.f("ck_page_events_window"),
        ),
        sa.CheckConstraint('"limit" IS NULL OR "limit" >= 1', name=op.f("ck_page_events_limit")),
        sa.PrimaryKeyConstraint("uid", name=op.f("pk_page_events")),
    )
    op.create_index(op.f("ix_page_events_page_context"), "page_events", ["page_context"])
    op.create_index(op.f("ix_page_events_start_date"), "page_events", ["start_date"])
    op.create_index(op.f("ix_page_events_end_date"), "page_events", ["end_date"])
    op.create_table(
        "page_event_transitions",
        sa.Column("event_uid", sa.UUID(), nullable=False),
        sa.Column("change", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.Text(), nullable=False),
        _timestamp("claimed_at"),
        sa.CheckConstraint(
            "change IN ('window_opened', 'window_closed')",
            name=op.f("ck_page_event_transitions_change"),
        ),
        sa.ForeignKeyConstraint(
            ["event_uid"],
            ["page_events.uid"],
            name=op.f("fk_page_event_transitions_event_uid_page_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "event_uid", "change", "at", name=op.f("pk_page_event_transitions")
        ),
    )


def downgrade() -> None:
    op.drop_table("page_event_transitions")
    op.drop_index(op.f("ix_page_events_end_date"), table_name="page_events")
    op.drop_index(op.f("ix_page_events_start_date"), table_name="page_events")
    op.drop_index(op.f("ix_page_events_page_context"), table_name="page_events")
    op.drop_table("page_events")

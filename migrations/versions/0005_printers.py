"""Printers probed over SNMP and their status cache.

``printers`` holds what admins register (the id is a UUIDv5 of model, host and
port); ``printer_status`` is the probe's cache, one row per printer, removed with it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _now(name: str) -> sa.Column[object]:
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "printers",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("community", sa.Text(), nullable=False),
        _now("created_at"),
        _now("updated_at"),
        sa.CheckConstraint("port BETWEEN 1 AND 65535", name=op.f("ck_printers_port")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_printers")),
    )
    op.create_table(
        "printer_status",
        sa.Column("printer_id", sa.UUID(), nullable=False),
        sa.Column("parsed", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        _now("updated_at"),
        sa.ForeignKeyConstraint(
            ["printer_id"],
            ["printers.id"],
            name=op.f("fk_printer_status_printer_id_printers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("printer_id", name=op.f("pk_printer_status")),
    )


def downgrade() -> None:
    op.drop_table("printer_status")
    op.drop_table("printers")

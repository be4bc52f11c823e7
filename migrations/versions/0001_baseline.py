"""Baseline: an empty schema under alembic's control.

The publish half keeps its state in Redis; later revisions add the message
journal.  Having a baseline lets every deployment be "at head" from day one.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

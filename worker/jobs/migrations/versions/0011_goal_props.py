"""A goal's custom properties in the inventory.

``inventory_goals.custom_props``: the goal's custom properties as Plausible answered the job
that ensured it, part of what makes a goal unique there (so a plan can see them change). No
job before this revision recorded them, so every goal recorded before is backfilled as ``{}``
(by the column's default); ``plan --refresh`` reads the live ones. The default stays, so the
inventory rebuilt from the jobs (``0006``'s ``backfill_inventory``) still inserts its goals.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A non-null column with a default: both SQLite and PostgreSQL fill the rows already there.
    op.add_column(
        "inventory_goals",
        sa.Column("custom_props", sa.JSON(), nullable=False, server_default=sa.text("'{}'")),
    )


def downgrade() -> None:
    with op.batch_alter_table("inventory_goals") as batch:
        batch.drop_column("custom_props")

"""The tracker script configuration as job work, and plans kept before they are applied.

- ``set_tracker``, a new value of the ``operation`` type (11 characters: on SQLite the column's
  VARCHAR stays as it is, so ``provisioning_jobs`` is not copied).
- ``inventory_sites.tracker``: the tracker configuration Plausible last answered a job of ours
  that set it; NULL for every site before (none was set through a job).
- ``plans``: a plan is kept when it is made (``POST /plans``, ``Provisioner.plan``), so
  ``applied_at`` is NULL until it is applied; ``cost`` holds its cost as priced then.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

OPERATION = "set_tracker"


def upgrade() -> None:
    op.add_column("inventory_sites", sa.Column("tracker", sa.JSON(), nullable=True))
    with op.batch_alter_table("plans") as batch:
        batch.add_column(sa.Column("cost", sa.JSON(), nullable=True))
        batch.alter_column("applied_at", existing_type=sa.DateTime(timezone=True), nullable=True)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TYPE operation ADD VALUE IF NOT EXISTS '{OPERATION}'")


def downgrade() -> None:
    # PostgreSQL cannot drop a value from a type: set_tracker stays, unused.
    op.execute("DELETE FROM plans WHERE applied_at IS NULL")
    with op.batch_alter_table("plans") as batch:
        batch.alter_column("applied_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.drop_column("cost")
    with op.batch_alter_table("inventory_sites") as batch:
        batch.drop_column("tracker")

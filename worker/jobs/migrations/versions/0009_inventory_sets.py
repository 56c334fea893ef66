"""Desired state: which set (``provision plan``/``apply``) made each inventory site and goal.

``managed_set`` is the set whose job created the resource; NULL for anything else (an import, the
HTTP service, a site that existed before). A plan prunes only its own set's resources. No job
before this revision carried a set, so there is nothing to backfill.

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None

TABLES = ("inventory_sites", "inventory_goals")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("managed_set", sa.String(length=64), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("managed_set")

"""Desired state: which set (``provision plan``/``apply``) made each inventory site and goal;
a site's custom properties and guests in the inventory; the operations that remove them; and
the plans applied (``plans``), for the dashboard.

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
down_revision = "0008"
branch_labels = None
depends_on = None

TABLES = ("inventory_sites", "inventory_goals")


#: New values of the ``operation`` type: no longer than the longest before (14 characters), so
#: SQLite's VARCHAR for it stays as it is and ``provisioning_jobs`` is not copied.
OPERATIONS = ("delete_prop", "delete_guest")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("managed_set", sa.String(length=64), nullable=True))
    op.create_table(
        "inventory_props",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("managed_set", sa.String(length=64), nullable=True),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account", "domain", "name"),
    )
    op.create_table(
        "inventory_guests",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("managed_set", sa.String(length=64), nullable=True),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account", "domain", "email"),
    )
    op.create_table(
        "plans",
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("set", sa.String(length=64), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("identity", sa.String(length=64), nullable=False),
        sa.Column("summary", sa.String(length=1000), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("made_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("batch_id"),
    )
    op.create_index("ix_plans_account", "plans", ["account"])
    op.create_index("ix_plans_applied_at", "plans", ["applied_at"])
    if op.get_bind().dialect.name == "postgresql":
        for value in OPERATIONS:
            op.execute(f"ALTER TYPE operation ADD VALUE IF NOT EXISTS '{value}'")


def downgrade() -> None:
    # PostgreSQL cannot drop a value from a type: the operations stay, unused.
    op.drop_index("ix_plans_applied_at", table_name="plans")
    op.drop_index("ix_plans_account", table_name="plans")
    op.drop_table("plans")
    op.drop_table("inventory_guests")
    op.drop_table("inventory_props")
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("managed_set")

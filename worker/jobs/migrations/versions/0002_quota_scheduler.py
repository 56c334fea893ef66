"""Accounts, priority classes and the shared quota limiter.

Jobs get an account (``default`` for every existing row) and a priority class (``bulk`` for
rows an import wrote, which are the ones with a batch id; ``interactive`` otherwise), and the
permits the scheduler reserved for them. ``quota_windows`` replaces the reactive
``quota_gates``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("provisioning_jobs") as batch:
        batch.add_column(
            sa.Column("account", sa.String(length=64), nullable=False, server_default="default")
        )
        batch.add_column(
            sa.Column(
                "priority", sa.String(length=16), nullable=False, server_default="interactive"
            )
        )
        batch.add_column(sa.Column("permits", sa.JSON(), nullable=True))
    op.execute("UPDATE provisioning_jobs SET priority = 'bulk' WHERE batch_id IS NOT NULL")
    with op.batch_alter_table("provisioning_jobs") as batch:
        # The defaults were only for the rows already there; the application sets both.
        batch.alter_column("account", server_default=None)
        batch.alter_column("priority", server_default=None)
        batch.create_index("ix_provisioning_jobs_account", ["account"])
        batch.create_index("ix_provisioning_jobs_admission", ["status", "priority", "created_at"])
        batch.create_index(
            "ix_provisioning_jobs_admission_batch", ["status", "priority", "batch_id", "created_at"]
        )
        batch.create_index("ix_provisioning_jobs_status_finished", ["status", "finished_at"])
    op.create_table(
        "quota_windows",
        sa.Column("quota", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("window", sa.BigInteger(), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.Column("spent", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("quota", "kind", "window"),
    )
    op.drop_table("quota_gates")


def downgrade() -> None:
    op.create_table(
        "quota_gates",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("closed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.drop_table("quota_windows")
    with op.batch_alter_table("provisioning_jobs") as batch:
        batch.drop_index("ix_provisioning_jobs_status_finished")
        batch.drop_index("ix_provisioning_jobs_admission_batch")
        batch.drop_index("ix_provisioning_jobs_admission")
        batch.drop_index("ix_provisioning_jobs_account")
        batch.drop_column("permits")
        batch.drop_column("priority")
        batch.drop_column("account")

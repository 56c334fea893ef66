"""The status table and the quota gate, as ``create_all`` made them before migrations existed.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

OPERATION = sa.Enum("provision_site", "delete_site", "delete_goal", name="operation")
JOB_STATUS = sa.Enum(
    "queued", "running", "waiting", "succeeded", "failed", "cancelled", name="jobstatus"
)


def upgrade() -> None:
    op.create_table(
        "provisioning_jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("operation", OPERATION, nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("batch_id", sa.String(length=64), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status", JOB_STATUS, nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.String(), nullable=True),
        sa.Column("error_status", sa.Integer(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_token", sa.String(length=32), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dispatch_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("provisioning_jobs") as batch:
        batch.create_index("ix_provisioning_jobs_idempotency_key", ["idempotency_key"], unique=True)
        batch.create_index("ix_provisioning_jobs_status", ["status"])
        batch.create_index("ix_provisioning_jobs_dispatched_at", ["dispatched_at"])
        batch.create_index("ix_provisioning_jobs_status_next", ["status", "next_attempt_at"])
        batch.create_index("ix_provisioning_jobs_batch_id", ["batch_id"])
        batch.create_index("ix_provisioning_jobs_domain", ["domain"])
    op.create_table(
        "quota_gates",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("closed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("quota_gates")
    op.drop_table("provisioning_jobs")
    OPERATION.drop(op.get_bind(), checkfirst=True)
    JOB_STATUS.drop(op.get_bind(), checkfirst=True)

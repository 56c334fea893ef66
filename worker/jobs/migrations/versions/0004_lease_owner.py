"""The process holding a running job's lease, so a sweeper on the same host can tell at once
that it died (a SIGKILLed pool child) instead of waiting for the lease to run out.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("provisioning_jobs") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("provisioning_jobs") as batch:
        batch.drop_column("lease_owner")

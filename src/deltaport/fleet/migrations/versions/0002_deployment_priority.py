"""Deployment priority: devices download the bundles of lower-priority sets first.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 20:45:00.000000

Existing deployment sets get priority 0 (the server default), the value the hub
used to send for every offer, so their order does not change.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot ALTER a table in place; on PostgreSQL it is a plain ALTER
    with op.batch_alter_table("deployment_sets", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("deployment_sets", schema=None) as batch_op:
        batch_op.drop_column("priority")

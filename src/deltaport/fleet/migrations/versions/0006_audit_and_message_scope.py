"""Message ids scoped per device; the audit log.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 18:15:00.000000

A status or activation message id was unique across all devices, so device B's
``m-1`` was taken for device A's and "accepted" without being judged. The unique key
is now (device, message id). ``audit_log`` records who changed what, from where.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_constraint("uq_events_message_id", type_="unique")
        batch_op.create_unique_constraint("uq_events_device_message", ["device_id", "message_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("operator", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("target", sa.String(length=300), nullable=True),
        sa.Column("remote", sa.String(length=100), nullable=False),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index("ix_audit_log_at", ["at"], unique=False)


def downgrade() -> None:
    op.drop_table("audit_log")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_constraint("uq_events_device_message", type_="unique")
        batch_op.create_unique_constraint("uq_events_message_id", ["message_id"])

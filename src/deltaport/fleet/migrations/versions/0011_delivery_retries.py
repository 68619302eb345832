"""Automatic retries of failed deliveries.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 09:40:00.000000

``deployment_retries``: a deployment set's ``--retries N`` and, for a set a retry
made, the set it retries; ``delivery_retries``: one row per set x device x image that
failed, with its state, retries made and when the next is due (issue 14,
``deltaport.pipelines.retry``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployment_retries",
        sa.Column("deployment_set_id", sa.String(length=40), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=True),
        sa.Column("retry_of", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(
            ["deployment_set_id"], ["deployment_sets.id"],
            name=op.f("fk_deployment_retries_deployment_set_id_deployment_sets"),
        ),
        sa.ForeignKeyConstraint(
            ["retry_of"], ["deployment_sets.id"],
            name=op.f("fk_deployment_retries_retry_of_deployment_sets"),
        ),
        sa.PrimaryKeyConstraint("deployment_set_id", name=op.f("pk_deployment_retries")),
    )
    with op.batch_alter_table("deployment_retries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deployment_retries_retry_of"), ["retry_of"],
                              unique=False)
    op.create_table(
        "delivery_retries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment_set_id", sa.String(length=40), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.String(length=100), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("retries_made", sa.Integer(), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("retry_set_id", sa.String(length=40), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_set_id"], ["deployment_sets.id"],
            name=op.f("fk_delivery_retries_deployment_set_id_deployment_sets"),
        ),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"],
                                name=op.f("fk_delivery_retries_device_id_devices")),
        sa.ForeignKeyConstraint(
            ["retry_set_id"], ["deployment_sets.id"],
            name=op.f("fk_delivery_retries_retry_set_id_deployment_sets"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_retries")),
        sa.UniqueConstraint("deployment_set_id", "device_id", "image_id",
                            name="uq_delivery_retries_set_device_image"),
    )
    with op.batch_alter_table("delivery_retries", schema=None) as batch_op:
        batch_op.create_index("ix_delivery_retries_due", ["state", "next_at"], unique=False)


def downgrade() -> None:
    op.drop_table("delivery_retries")
    op.drop_table("deployment_retries")

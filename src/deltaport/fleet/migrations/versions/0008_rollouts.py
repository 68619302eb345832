"""Rollouts in waves.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 00:35:00.000000

``rollouts``: a deployment set staged everywhere and activated wave by wave, with its
thresholds and state; ``rollout_devices``: each device's wave (issue 14).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("deployment_set_id", sa.String(length=40), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("waves", sa.JSON(), nullable=False),
        sa.Column("current_wave", sa.Integer(), nullable=False),
        sa.Column("success_threshold", sa.String(length=10), nullable=False),
        sa.Column("error_threshold", sa.String(length=10), nullable=False),
        sa.Column("approve_each", sa.Boolean(), nullable=False),
        sa.Column("approved_wave", sa.Integer(), nullable=False),
        sa.Column("failures_accepted", sa.Integer(), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("contact_email", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["deployment_set_id"], ["deployment_sets.id"],
                                name=op.f("fk_rollouts_deployment_set_id_deployment_sets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollouts")),
        sa.UniqueConstraint("deployment_set_id", name=op.f("uq_rollouts_deployment_set_id")),
    )
    op.create_table(
        "rollout_devices",
        sa.Column("rollout_id", sa.String(length=40), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"],
                                name=op.f("fk_rollout_devices_device_id_devices")),
        sa.ForeignKeyConstraint(["rollout_id"], ["rollouts.id"],
                                name=op.f("fk_rollout_devices_rollout_id_rollouts")),
        sa.PrimaryKeyConstraint("rollout_id", "device_id", name=op.f("pk_rollout_devices")),
    )


def downgrade() -> None:
    op.drop_table("rollout_devices")
    op.drop_table("rollouts")

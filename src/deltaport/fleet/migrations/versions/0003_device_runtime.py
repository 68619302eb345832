"""Device runtime: signed desired manifest versions, activation outcomes, runtime reports.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 08:00:00.000000

``desired_manifests`` keeps the per-device version counter (unique per device),
``device_deployments`` what activation messages said per device × deployment,
``device_modules`` the latest runtime report's modules, and ``devices.runtime_*``
the rest of that report (docs/device-runtime.md). Existing rows need no values.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "desired_manifests",
        sa.Column("id", _ID, nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("deployment_set_id", sa.String(length=40), nullable=False),
        sa.Column("digest", sa.String(length=100), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_set_id"],
            ["deployment_sets.id"],
            name=op.f("fk_desired_manifests_deployment_set_id_deployment_sets"),
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_desired_manifests_device_id_devices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_desired_manifests")),
        sa.UniqueConstraint("device_id", "version", name="uq_desired_manifests_device_version"),
    )
    op.create_table(
        "device_deployments",
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("deployment_set_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_set_id"],
            ["deployment_sets.id"],
            name=op.f("fk_device_deployments_deployment_set_id_deployment_sets"),
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_device_deployments_device_id_devices")
        ),
        sa.PrimaryKeyConstraint(
            "device_id", "deployment_set_id", name=op.f("pk_device_deployments")
        ),
    )
    with op.batch_alter_table("device_deployments", schema=None) as batch_op:
        batch_op.create_index("ix_device_deployments_set", ["deployment_set_id"], unique=False)
    op.create_table(
        "device_modules",
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("module", sa.String(length=200), nullable=False),
        sa.Column("deployment_set_id", sa.String(length=200), nullable=True),
        sa.Column("desired_image_id", sa.String(length=100), nullable=True),
        sa.Column("running_image_id", sa.String(length=100), nullable=True),
        sa.Column("runtime_status", sa.String(length=20), nullable=False),
        sa.Column("health", sa.String(length=20), nullable=True),
        sa.Column("exit_code", sa.BigInteger(), nullable=True),
        sa.Column("restart_count", sa.BigInteger(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exited_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status_description", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_device_modules_device_id_devices")
        ),
        sa.PrimaryKeyConstraint("device_id", "module", name=op.f("pk_device_modules")),
    )
    # batch mode: SQLite cannot ALTER a table in place; on PostgreSQL it is a plain ALTER
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("runtime_digest", sa.String(length=100), nullable=True))
        batch_op.add_column(
            sa.Column("runtime_deployment_set_id", sa.String(length=200), nullable=True)
        )
        batch_op.add_column(sa.Column("runtime_version", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("runtime_last_attempt", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("runtime_reported_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("runtime_reported_at")
        batch_op.drop_column("runtime_last_attempt")
        batch_op.drop_column("runtime_version")
        batch_op.drop_column("runtime_deployment_set_id")
        batch_op.drop_column("runtime_digest")
    with op.batch_alter_table("device_deployments", schema=None) as batch_op:
        batch_op.drop_index("ix_device_deployments_set")
    op.drop_table("device_modules")
    op.drop_table("device_deployments")
    op.drop_table("desired_manifests")

"""Initial fleet schema: devices, images, device images, bundles, deployments, events.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-27 18:58:01.579614
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployment_sets",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("contact_email", sa.String(length=320), nullable=False),
        sa.Column("manifest_kind", sa.String(length=20), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_sets")),
    )
    with op.batch_alter_table("deployment_sets", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_deployment_sets_requested_by"), ["requested_by"], unique=False
        )

    op.create_table(
        "devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("token_hash", sa.String(length=200), nullable=False),
        sa.Column("link_rate_bps", sa.BigInteger(), nullable=False),
        sa.Column("local_registry", sa.String(length=255), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
        sa.UniqueConstraint("name", name=op.f("uq_devices_name")),
    )
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("image_id", sa.String(length=100), nullable=False),
        sa.Column("manifest_digest", sa.String(length=100), nullable=False),
        sa.Column("diff_ids", sa.JSON(), nullable=False),
        sa.Column("layer_sizes", sa.JSON(), nullable=False),
        sa.Column("build_id", sa.String(length=200), nullable=True),
        sa.Column("signature_path", sa.String(length=1000), nullable=True),
        sa.Column("registered_by", sa.String(length=200), nullable=True),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("name", "image_id", name="uq_images_name_image_id"),
    )
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_images_image_id"), ["image_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_images_name"), ["name"], unique=False)

    op.create_table(
        "bundles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.String(length=100), nullable=False),
        sa.Column("location", sa.String(length=1000), nullable=False),
        sa.Column("deployment_set_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_set_id"],
            ["deployment_sets.id"],
            name=op.f("fk_bundles_deployment_set_id_deployment_sets"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bundles")),
        sa.UniqueConstraint("key", name=op.f("uq_bundles_key")),
    )
    op.create_table(
        "deployment_devices",
        sa.Column("deployment_set_id", sa.String(length=40), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("arrived_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["deployment_set_id"],
            ["deployment_sets.id"],
            name=op.f("fk_deployment_devices_deployment_set_id_deployment_sets"),
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_deployment_devices_device_id_devices")
        ),
        sa.PrimaryKeyConstraint(
            "deployment_set_id", "device_id", name=op.f("pk_deployment_devices")
        ),
    )
    with op.batch_alter_table("deployment_devices", schema=None) as batch_op:
        batch_op.create_index(
            "ix_deployment_devices_arrived", ["deployment_set_id", "arrived_at"], unique=False
        )
    op.create_table(
        "deployment_images",
        sa.Column("deployment_set_id", sa.String(length=40), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_set_id"],
            ["deployment_sets.id"],
            name=op.f("fk_deployment_images_deployment_set_id_deployment_sets"),
        ),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name=op.f("fk_deployment_images_image_id_images")
        ),
        sa.PrimaryKeyConstraint("deployment_set_id", "image_id", name=op.f("pk_deployment_images")),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_id", sa.String(length=200), nullable=True),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=True),
        sa.Column("image_id", sa.String(length=100), nullable=True),
        sa.Column("deployment_set_id", sa.String(length=40), nullable=True),
        sa.Column("from_status", sa.String(length=20), nullable=True),
        sa.Column("to_status", sa.String(length=20), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["deployment_set_id"],
            ["deployment_sets.id"],
            name=op.f("fk_events_deployment_set_id_deployment_sets"),
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_events_device_id_devices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("message_id", name=op.f("uq_events_message_id")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_at", ["at"], unique=False)

    op.create_table(
        "bundle_devices",
        sa.Column("bundle_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("deployment_set_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["bundle_id"], ["bundles.id"], name=op.f("fk_bundle_devices_bundle_id_bundles")
        ),
        sa.ForeignKeyConstraint(
            ["deployment_set_id"],
            ["deployment_sets.id"],
            name=op.f("fk_bundle_devices_deployment_set_id_deployment_sets"),
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_bundle_devices_device_id_devices")
        ),
        sa.PrimaryKeyConstraint(
            "bundle_id", "device_id", "deployment_set_id", name=op.f("pk_bundle_devices")
        ),
    )
    op.create_table(
        "device_images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("bundle_id", sa.Integer(), nullable=True),
        sa.Column("deployment_set_id", sa.String(length=40), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["bundle_id"], ["bundles.id"], name=op.f("fk_device_images_bundle_id_bundles")
        ),
        sa.ForeignKeyConstraint(
            ["deployment_set_id"],
            ["deployment_sets.id"],
            name=op.f("fk_device_images_deployment_set_id_deployment_sets"),
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_device_images_device_id_devices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_images")),
        sa.UniqueConstraint("device_id", "image_id", name="uq_device_images_device_image"),
    )
    with op.batch_alter_table("device_images", schema=None) as batch_op:
        batch_op.create_index("ix_device_images_image_status", ["image_id", "status"], unique=False)
        batch_op.create_index("ix_device_images_set", ["deployment_set_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("device_images", schema=None) as batch_op:
        batch_op.drop_index("ix_device_images_set")
        batch_op.drop_index("ix_device_images_image_status")

    op.drop_table("device_images")
    op.drop_table("bundle_devices")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_at")

    op.drop_table("events")
    op.drop_table("deployment_images")
    with op.batch_alter_table("deployment_devices", schema=None) as batch_op:
        batch_op.drop_index("ix_deployment_devices_arrived")

    op.drop_table("deployment_devices")
    op.drop_table("bundles")
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_images_name"))
        batch_op.drop_index(batch_op.f("ix_images_image_id"))

    op.drop_table("images")
    op.drop_table("devices")
    with op.batch_alter_table("deployment_sets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deployment_sets_requested_by"))

    op.drop_table("deployment_sets")

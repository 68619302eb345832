"""Bytes of a bundle received by a device, as its agent reports mid-download.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 13:00:00.000000

``download_progress``: one row per device image, the latest ``POST
/api/v1/device/progress`` (bytes received, when, the hub's rate estimate); the
dashboard shows it in place of the link-rate estimate (issue 12).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "download_progress",
        sa.Column("device_image_id", sa.Integer(), nullable=False),
        sa.Column("bundle_id", sa.Integer(), nullable=False),
        sa.Column("bytes_received", sa.BigInteger(), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rate_bps", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["bundle_id"], ["bundles.id"],
                                name=op.f("fk_download_progress_bundle_id_bundles")),
        sa.ForeignKeyConstraint(["device_image_id"], ["device_images.id"],
                                name=op.f("fk_download_progress_device_image_id_device_images")),
        sa.PrimaryKeyConstraint("device_image_id", name=op.f("pk_download_progress")),
    )


def downgrade() -> None:
    op.drop_table("download_progress")

"""An index on device_images (status, device_id).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 12:50:00.000000

The dashboard's overview counts the devices with an image in transit and with a
failed image (``deltaport.hub.ui.queries.overview``): without this index PostgreSQL
scanned all of device_images (1,000,000 rows at 100,000 devices, ~1 s); with it, an
index-only scan of just those statuses, already in device order (~0.27 s) (issue 12).
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("device_images", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_images_status_device"),
                              ["status", "device_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("device_images", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_images_status_device"))

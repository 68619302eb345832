"""An index on devices.token_hash.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 12:20:00.000000

Every device request is authenticated by looking its token's hash up
(``deltaport.hub.auth``); without an index that lookup scanned the devices table,
about 11 ms per request at 100,000 devices, which capped check-ins (issue 15).
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_devices_token_hash"), ["token_hash"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_devices_token_hash"))

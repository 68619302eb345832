"""Bundle release versions: a counter per target name and the release of each bundle.

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-02 15:00:00.000000

Bundles built before this revision have no release row: the hub does not reuse
them (it builds them again, with a version), so no device is offered an
unversioned bundle once it holds a versioned one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bundle_versions",
        sa.Column("target_name", sa.String(length=300), nullable=False),
        sa.Column("last_version", sa.BigInteger(), nullable=False),
        sa.Column("last_image_id", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("target_name"),
    )
    op.create_table(
        "bundle_releases",
        sa.Column("bundle_key", sa.String(length=100), nullable=False),
        sa.Column("target_name", sa.String(length=300), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bundle_key"),
    )


def downgrade() -> None:
    op.drop_table("bundle_releases")
    op.drop_table("bundle_versions")

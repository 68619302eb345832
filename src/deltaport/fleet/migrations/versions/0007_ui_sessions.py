"""Dashboard sessions.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 00:30:00.000000

``ui_sessions`` holds the signed-in dashboard sessions (hashed cookie secret, operator,
role, CSRF token, expiry) in the database, so several hubs can share them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ui_sessions",
        sa.Column("id", sa.String(length=71), nullable=False),
        sa.Column("operator", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ui_sessions")),
    )
    with op.batch_alter_table("ui_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_ui_sessions_expires_at", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_table("ui_sessions")

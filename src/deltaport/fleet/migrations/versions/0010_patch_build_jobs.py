"""Patch builds as jobs: queued deployments and the layer patches each waits for.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 09:30:00.000000

``queued_deployments``: a deployment whose patches build in ``deltaport worker``
processes (issue 15), by the id the operator was given; ``patch_builds``: one row per
deployment x layer patch, done once the patch is in the shared cache. The task
queue's own tables (procrastinate's schema) are not made here: ``deltaport worker``
and the first queued deploy apply them (``deltaport.jobs.app.ensure_schema``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queued_deployments",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queued_deployments")),
    )
    op.create_table(
        "patch_builds",
        sa.Column("deployment_id", sa.String(length=40), nullable=False),
        sa.Column("patch_key", sa.String(length=64), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("built_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["queued_deployments.id"],
            name=op.f("fk_patch_builds_deployment_id_queued_deployments"),
        ),
        sa.PrimaryKeyConstraint("deployment_id", "patch_key", name=op.f("pk_patch_builds")),
    )
    with op.batch_alter_table("patch_builds", schema=None) as batch_op:
        batch_op.create_index("ix_patch_builds_key", ["patch_key"], unique=False)


def downgrade() -> None:
    op.drop_table("patch_builds")
    op.drop_table("queued_deployments")

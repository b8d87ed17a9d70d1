"""Registered models: names with numbered versions (succeeded jobs) and movable aliases.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 16:00:00.000000
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
        "registered_model",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("next_version", sa.Integer(), nullable=False),
        sa.Column("max_batch_size", sa.Integer(), nullable=True),
        sa.Column("max_delay_ms", sa.Float(), nullable=True),
        sa.Column("exact_batches", sa.Boolean(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_registered_model_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registered_model")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_registered_model_tenant_id_name")),
    )
    with op.batch_alter_table("registered_model", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_registered_model_tenant_id"), ["tenant_id"], unique=False
        )
    op.create_table(
        "model_version",
        sa.Column("model_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["job.id"], name=op.f("fk_model_version_job_id_job"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["registered_model.id"],
            name=op.f("fk_model_version_model_id_registered_model"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("model_id", "version", name=op.f("pk_model_version")),
    )
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_version_job_id"), ["job_id"], unique=False)
    op.create_table(
        "model_alias",
        sa.Column("model_id", sa.String(length=40), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["registered_model.id"],
            name=op.f("fk_model_alias_model_id_registered_model"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("model_id", "alias", name=op.f("pk_model_alias")),
    )


def downgrade() -> None:
    op.drop_table("model_alias")
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_version_job_id"))
    op.drop_table("model_version")
    with op.batch_alter_table("registered_model", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_registered_model_tenant_id"))
    op.drop_table("registered_model")

"""Resources, queues and priorities: where a job waits, what a worker needs to claim it, and the
live workers.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 19:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.add_column(
            sa.Column("queue", sa.String(length=8), server_default="any", nullable=False)
        )
        batch.add_column(sa.Column("priority", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("gpus", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("processes", sa.Integer(), server_default="1", nullable=False))
        batch.add_column(sa.Column("nodes", sa.Integer(), server_default="1", nullable=False))
        batch.add_column(
            sa.Column("memory_bytes", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch.create_index("ix_job_queue_status", ["queue", "status", "priority"])
    # Jobs from before: what they need is what the dry run estimated.
    op.execute("UPDATE job SET memory_bytes = estimated_memory_bytes")
    with op.batch_alter_table("tenant") as batch:
        batch.add_column(sa.Column("last_claimed_at", UTC_DATETIME, nullable=True))
    op.create_table(
        "worker",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("queues", sa.String(length=100), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("cpus", sa.Integer(), nullable=False),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("started_at", UTC_DATETIME, nullable=False),
        sa.Column("seen_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_worker")),
    )
    op.create_index(op.f("ix_worker_seen_at"), "worker", ["seen_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_worker_seen_at"), table_name="worker")
    op.drop_table("worker")
    with op.batch_alter_table("tenant") as batch:
        batch.drop_column("last_claimed_at")
    with op.batch_alter_table("job") as batch:
        batch.drop_index("ix_job_queue_status")
        for column in ("memory_bytes", "nodes", "processes", "gpus", "priority", "queue"):
            batch.drop_column(column)

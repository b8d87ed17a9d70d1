"""ix_job_status: the reaper, the sweeper (every worker, every sweep interval) and /metrics read
jobs by status across all tenants; without it each pass scans the whole job table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 06:05:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_job_status", "job", ["status"])


def downgrade() -> None:
    op.drop_index("ix_job_status", table_name="job")

"""job.precision: fp32, bf16 or fp16, set with job.device by a job's first attempt and kept by
every later one (a resumed attempt used to take whatever its worker chose).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 22:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("precision", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("precision")

"""A per-job event sequence: job.seq (the job's cursor), metric.seq, and job_event (status changes).

Existing rows are numbered as the stream used to send them: a job's metric rows by step, then
time, then name; then one event for the job's status as it stands.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 18:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

NUMBER_METRICS = """
UPDATE metric SET seq = numbered.n
FROM (SELECT job_id, step, name, row_number() OVER (PARTITION BY job_id ORDER BY step, time, name) AS n
      FROM metric) AS numbered
WHERE metric.job_id = numbered.job_id AND metric.step = numbered.step AND metric.name = numbered.name
"""
STATUS_EVENTS = """
INSERT INTO job_event (job_id, seq, status, reason, attempt, time)
SELECT job.id, (SELECT count(*) FROM metric WHERE metric.job_id = job.id) + 1, job.status, job.reason,
       job.attempt, job.updated_at
FROM job
"""
JOB_CURSOR = "UPDATE job SET seq = (SELECT max(seq) FROM job_event WHERE job_event.job_id = job.id)"


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), server_default="0", nullable=False))
    with op.batch_alter_table("metric", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
    op.create_table(
        "job_event",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["job.id"], name=op.f("fk_job_event_job_id_job"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "seq", name=op.f("pk_job_event")),
    )
    op.execute(NUMBER_METRICS)
    op.execute(STATUS_EVENTS)
    op.execute(JOB_CURSOR)
    with op.batch_alter_table("metric", schema=None) as batch_op:
        batch_op.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch_op.create_unique_constraint(op.f("uq_metric_job_id_seq"), ["job_id", "seq"])


def downgrade() -> None:
    with op.batch_alter_table("metric", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("uq_metric_job_id_seq"), type_="unique")
        batch_op.drop_column("seq")
    op.drop_table("job_event")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("seq")

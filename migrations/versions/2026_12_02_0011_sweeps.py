"""Sweeps: the sweep table, job.sweep_id and job.trial_number (a trial is an ordinary job), and
Optuna's RDB storage tables, where each sweep's study lives (core/sweeps.py).

Optuna's tables are written out here, from Optuna 4.9's models (optuna/storages/_rdb/models.py,
storage schema v3.2.0.a), rather than left to `RDBStorage` to create: Optuna keeps its schema
revision in `alembic_version`, the table Fitserve's own revision lives in, so its creation,
stamping and compatibility check cannot run in Fitserve's database (core/sweeps.py skips them),
and its create_all is a check-then-create that races between processes. tests/test_sweep_study.py
checks these tables against the installed Optuna's models: an Optuna release that changes its
storage schema fails that test, and needs a migration of ours.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 18:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

STUDY_DIRECTION = ("NOT_SET", "MINIMIZE", "MAXIMIZE")
TRIAL_STATE = ("RUNNING", "COMPLETE", "PRUNED", "FAIL", "WAITING")
INTERMEDIATE_TYPE = ("FINITE", "INF_POS", "INF_NEG", "NAN")
VALUE_TYPE = ("FINITE", "INF_POS", "INF_NEG")
ENUMS = {
    "studydirection": STUDY_DIRECTION,
    "trialstate": TRIAL_STATE,
    "trialintermediatevaluetype": INTERMEDIATE_TYPE,
    "trialvaluetype": VALUE_TYPE,
}


def upgrade() -> None:
    op.create_table(
        "sweep",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("trial_budget", sa.Integer(), nullable=False),
        sa.Column("parallelism", sa.Integer(), nullable=False),
        sa.Column("trials_created", sa.Integer(), nullable=False),
        sa.Column("trials_finished", sa.Integer(), nullable=False),
        sa.Column("best_job_id", sa.String(length=40), nullable=True),
        sa.Column("best_value", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_sweep_tenant_id_tenant"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweep")),
    )
    with op.batch_alter_table("sweep", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sweep_tenant_id"), ["tenant_id"], unique=False)
    # Columns only, no foreign key to sweep: SQLite adds a plain column in place, but would copy
    # the job table to add a key, and dropping the old copy (foreign keys on) would cascade to
    # every job's events, metrics and checkpoints.
    # Plain ALTER TABLE ADD COLUMN (not batch mode, which may decide to copy the table), and a
    # literal default: tests/test_events.py upgrades a database holding metric rows and checks
    # none is lost.
    op.add_column("job", sa.Column("sweep_id", sa.String(length=40), nullable=True))
    op.add_column("job", sa.Column("trial_number", sa.Integer(), nullable=True))
    op.add_column(
        "job", sa.Column("trial_counted", sa.Boolean(), server_default="0", nullable=False)
    )
    op.create_index(op.f("ix_job_sweep_id"), "job", ["sweep_id"], unique=False)
    _create_optuna_tables()


def downgrade() -> None:
    _drop_optuna_tables()
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_sweep_id"))
        batch_op.drop_column("trial_counted")
        batch_op.drop_column("trial_number")
        batch_op.drop_column("sweep_id")
    with op.batch_alter_table("sweep", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sweep_tenant_id"))
    op.drop_table("sweep")


def _enum(name: str) -> sa.Enum:
    return sa.Enum(*ENUMS[name], name=name)


def _create_optuna_tables() -> None:
    """Optuna's RDB storage schema, table for table as its models declare it."""
    op.create_table(
        "studies",
        sa.Column("study_id", sa.Integer(), primary_key=True),
        sa.Column("study_name", sa.String(length=512), nullable=False),
    )
    op.create_index("ix_studies_study_name", "studies", ["study_name"], unique=True)
    op.create_table(
        "version_info",
        sa.Column("version_info_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("schema_version", sa.Integer(), nullable=True),
        sa.Column("library_version", sa.String(length=256), nullable=True),
        sa.CheckConstraint("version_info_id=1", name="one_row"),
    )
    op.create_table(
        "study_directions",
        sa.Column("study_direction_id", sa.Integer(), primary_key=True),
        sa.Column("direction", _enum("studydirection"), nullable=False),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.study_id"), nullable=False),
        sa.Column("objective", sa.Integer(), nullable=False),
        sa.UniqueConstraint("study_id", "objective"),
    )
    _attributes("study_user_attributes", "study_id", "studies.study_id")
    _attributes("study_system_attributes", "study_id", "studies.study_id")
    _create_trials()
    _attributes("trial_user_attributes", "trial_id", "trials.trial_id")
    _attributes("trial_system_attributes", "trial_id", "trials.trial_id")


def _attributes(table: str, owner: str, owner_key: str) -> None:
    """A study's or a trial's key-value attributes."""
    op.create_table(
        table,
        sa.Column(f"{table[:-1]}_id", sa.Integer(), primary_key=True),
        sa.Column(owner, sa.Integer(), sa.ForeignKey(owner_key), nullable=True),
        sa.Column("key", sa.String(length=512), nullable=True),
        sa.Column("value_json", sa.Text(), nullable=True),
        sa.UniqueConstraint(owner, "key"),
    )


def _create_trials() -> None:
    op.create_table(
        "trials",
        sa.Column("trial_id", sa.Integer(), primary_key=True),
        sa.Column("number", sa.Integer(), nullable=True),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.study_id"), nullable=True),
        sa.Column("state", _enum("trialstate"), nullable=False),
        sa.Column("datetime_start", sa.DateTime(), nullable=True),
        sa.Column("datetime_complete", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_trials_study_id", "trials", ["study_id"], unique=False)
    trial_id = sa.ForeignKey("trials.trial_id")
    op.create_table(
        "trial_heartbeats",
        sa.Column("trial_heartbeat_id", sa.Integer(), primary_key=True),
        sa.Column("trial_id", sa.Integer(), trial_id, nullable=False, unique=True),
        sa.Column("heartbeat", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "trial_intermediate_values",
        sa.Column("trial_intermediate_value_id", sa.Integer(), primary_key=True),
        sa.Column("trial_id", sa.Integer(), sa.ForeignKey("trials.trial_id"), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("intermediate_value", sa.Float(precision=53), nullable=True),
        sa.Column("intermediate_value_type", _enum("trialintermediatevaluetype"), nullable=False),
        sa.UniqueConstraint("trial_id", "step"),
    )
    op.create_table(
        "trial_params",
        sa.Column("param_id", sa.Integer(), primary_key=True),
        sa.Column("trial_id", sa.Integer(), sa.ForeignKey("trials.trial_id"), nullable=True),
        sa.Column("param_name", sa.String(length=512), nullable=True),
        sa.Column("param_value", sa.Float(precision=53), nullable=True),
        sa.Column("distribution_json", sa.Text(), nullable=True),
        sa.UniqueConstraint("trial_id", "param_name"),
    )
    op.create_table(
        "trial_values",
        sa.Column("trial_value_id", sa.Integer(), primary_key=True),
        sa.Column("trial_id", sa.Integer(), sa.ForeignKey("trials.trial_id"), nullable=False),
        sa.Column("objective", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(precision=53), nullable=True),
        sa.Column("value_type", _enum("trialvaluetype"), nullable=False),
        sa.UniqueConstraint("trial_id", "objective"),
    )


def _drop_optuna_tables() -> None:
    for table in (
        "trial_values",
        "trial_params",
        "trial_intermediate_values",
        "trial_heartbeats",
        "trial_user_attributes",
        "trial_system_attributes",
        "trials",
        "study_user_attributes",
        "study_system_attributes",
        "study_directions",
        "version_info",
        "studies",
    ):
        op.drop_table(table)
    for name in ENUMS:  # PostgreSQL keeps an enum's type after its tables (SQLite has none)
        _enum(name).drop(op.get_bind(), checkfirst=True)

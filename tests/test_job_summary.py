"""A job's summary: what the datasets describe for it, and jobs from before migration 0007 (their
summary is null, and the route answers it empty), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy import create_engine, text

from api.summary import to_summary
from core.datasets import builtin_description, load_builtin
from core.db import alembic_config, get_engine, session_scope
from core.spec import DatasetSpec
from core.tables import Job
from tests.helpers import EXAMPLES

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def test_datasets_describe_the_range_of_images_and_the_columns_of_tables() -> None:
    digits = builtin_description(DatasetSpec(name="digits"))
    assert digits["value_range"] == [0.0, 16.0] and digits["feature_means"] is None
    iris = builtin_description(DatasetSpec(name="iris"))
    assert iris["value_range"] is None and iris["feature_names"][0] == "sepal length (cm)"
    assert iris["feature_means"] == pytest.approx([5.843, 3.057, 3.758, 1.199], abs=1e-3)
    road = load_builtin(DatasetSpec(name="road", n_samples=50), seed=0)
    low, high = road.describe()["value_range"]  # no pixel scale: the values' own span
    assert low == pytest.approx(float(road.x.min()), abs=1e-5) and high > 0.9
    sine = builtin_description(DatasetSpec(name="sequence_sine"))
    assert sine["feature_means"] is None  # (20, 1) sequences: no form of columns


@pytest.fixture(params=["sqlite", "postgres"])
def old_database(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    name = f"fitserve_summary_{tmp_path.name[-8:].lower().replace('-', '_')}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')  # type: ignore[arg-type]
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]

    def drop() -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]

    request.addfinalizer(drop)
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def test_a_job_from_before_the_migration_has_an_empty_summary(old_database: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(old_database), "0006")
    engine = create_engine(old_database)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    spec = (EXAMPLES / "digits_mlp.json").read_text()
    with engine.begin() as c:
        c.execute(
            text("INSERT INTO tenant (id, name, created_at) VALUES ('ten_1', 't', :now)"),
            {"now": now},
        )
        c.execute(
            text(
                "INSERT INTO job (id, tenant_id, name, spec, status, attempt, max_attempts, "
                "cancel_requested, epoch, epochs, step, steps, parameters, estimated_memory_bytes, "
                "latest_metrics, test_metrics, created_at, updated_at) VALUES ('job_1', 'ten_1', "
                "'j', :spec, 'succeeded', 1, 3, false, 5, 5, 0, 0, 38410, 1000, '{}', '{}', :now, "
                ":now)"
            ),
            {"now": now, "spec": json.dumps(json.loads(spec))},
        )
    engine.dispose()
    command.upgrade(alembic_config(old_database), "head")
    with session_scope(old_database) as s:
        job = s.get(Job, "job_1")
        assert job is not None and job.summary is None
        summary = to_summary(job)
    assert summary.model_dump() == {
        "family": "supervised",
        "operations": ["predict"],
        "parameters": 38410,
        "estimated_memory_bytes": 1000,
        "output_shape": None,
        "layers": [],
        "input": None,
    }
    command.downgrade(alembic_config(old_database), "0006")  # and the way back
    get_engine(old_database).dispose()

"""Real databases for the tests: a SQLite file and a fresh PostgreSQL database, both built
by the Alembic migrations."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.db import upgrade
from core.queue import celery_app
from core.settings import get_settings

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    import psycopg

    name = f"fitserve_test_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    upgrade(url)
    yield url
    from core.db import _engines

    for key in [k for k in _engines if k[1] == url]:
        _engines.pop(key).dispose()
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'fitserve.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def service_env(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Settings pointing at the database under test and a fresh data dir."""
    monkeypatch.setenv("FITSERVE_DATABASE_URL", database_url)
    monkeypatch.setenv("FITSERVE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FITSERVE_HEARTBEAT_SECONDS", "0.1")
    get_settings.cache_clear()
    celery_app.cache_clear()  # its broker URL comes from the settings: this test's data dir
    yield database_url
    get_settings.cache_clear()
    celery_app.cache_clear()

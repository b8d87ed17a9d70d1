"""A real PostgreSQL + Redis service whose worker is broken on purpose: short leases and a fast
reaper, so a killed worker's job comes back in seconds."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from tests.e2e.conftest import PG_ADMIN, Service, _base_env, free_port, shared_redis_queue, wait_for
from tests.helpers import digits_mlp

FAULT_ENV = {
    "FITSERVE_LEASE_SECONDS": "3",
    "FITSERVE_HEARTBEAT_SECONDS": "0.2",
    "FITSERVE_SWEEP_INTERVAL_SECONDS": "0.5",
    "FITSERVE_QUEUED_GRACE_SECONDS": "5",
    "FITSERVE_MAX_ATTEMPTS": "3",
}


class FaultService(Service):
    database: Engine | None = None

    def row(self, job_id: str) -> dict[str, Any]:
        assert self.database is not None
        with self.database.connect() as c:
            return dict(
                c.execute(text("SELECT * FROM job WHERE id = :id"), {"id": job_id}).mappings().one()
            )

    def sql(self, query: str, **params: Any) -> list[Any]:
        assert self.database is not None
        with self.database.begin() as c:
            return list(c.execute(text(query), params).all())

    def submit(self, epochs: int, **fit: Any) -> str:
        """A small digits job (batch 4: about 0.7 s an epoch here); its id."""
        raw = digits_mlp(epochs=epochs, batch_size=4, **fit).model_dump(mode="json")
        with self.client() as client:
            created = client.post("/v1/jobs", json=raw)
        assert created.status_code == 201, created.text
        return str(created.json()["id"])

    def finish(self, job_id: str, timeout: float = 90) -> dict[str, Any]:
        """The job as the API shows it once it is terminal."""
        with self.client() as client:
            return wait_for(client, job_id, ("succeeded", "failed", "cancelled"), timeout=timeout)

    def metrics_are_unique(self, job_id: str) -> None:
        """One point per (step, name), whatever was redelivered or resumed: in the table, and
        through the API as a user reads them."""
        total, distinct = self.sql(
            "SELECT count(*), count(DISTINCT (step, name)) FROM metric WHERE job_id = :j", j=job_id
        )[0]
        assert total == distinct > 0
        with self.client() as client:
            points = client.get(f"/v1/jobs/{job_id}/metrics").json()["data"]
        keys = [(p["step"], p["name"]) for p in points]
        assert keys and len(keys) == len(set(keys)), sorted(keys)

    def until(
        self, job_id: str, ok: Callable[[dict[str, Any]], bool], timeout: float = 90
    ) -> dict[str, Any]:
        """The job's row once `ok` holds for it, polled every 50 ms."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.row(job_id)
            if ok(row):
                return row
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} never got there: {self.row(job_id)}\n{self.tail()}")


@contextlib.contextmanager
def fault_service(
    request: pytest.FixtureRequest,
    tmp: Path,
    label: str,
    broker_url: str,
    queue: str,
    postgres: str = "127.0.0.1:5432",
    **env: str,
) -> Iterator[FaultService]:
    """`fitserve worker` + `fitserve api` on a fresh database of the PostgreSQL server at `postgres`
    (host:port) and the given broker, with FAULT_ENV's short leases; the database is dropped afterwards."""
    import psycopg

    name = f"fitserve_{label.replace('-', '_')}_{secrets.token_hex(4)}"
    admin = PG_ADMIN.replace("127.0.0.1:5432", postgres)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@{postgres}/{name}"
    port = free_port()
    env = (
        _base_env(tmp)
        | FAULT_ENV
        | {"FITSERVE_DATABASE_URL": url, "FITSERVE_BROKER_URL": broker_url, "FITSERVE_QUEUE": queue}
        | env
    )
    service = FaultService(label, f"http://127.0.0.1:{port}", env, tmp)
    service.database = create_engine(url)
    try:
        service.fitserve("db", "upgrade")
        service.keys["a"] = service.fitserve("keys", "create", "--tenant", "alpha")
        service.start("worker")
        service.start("api", "--port", str(port))
        service.wait_ready()
        yield service
    finally:
        if getattr(request.session, "testsfailed", 0):
            print(f"\n{label} service logs:\n{service.tail(80)}")
        service.stop()
        service.database.dispose()
        with contextlib.suppress(Exception), psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def faulty(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaultService]:
    with (
        shared_redis_queue("faults") as (url, queue),
        fault_service(request, tmp_path_factory.mktemp("faults"), "faults", url, queue) as service,
    ):
        yield service

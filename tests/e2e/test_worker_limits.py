"""A worker whose own MAX_JOB_MEMORY_BYTES is lower than the API's: the API accepts a job its own
limit allows, and the real worker process that claims it fails it with the reason, before any
training (PostgreSQL, Redis, `fitserve api` and `fitserve worker` as separate processes)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import PG_ADMIN, Service, _base_env, free_port, shared_redis_queue, wait_for
from tests.e2e.http import example

WORKER_LIMIT = 65_536


@pytest.fixture(scope="module")
def small_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    import psycopg

    tmp: Path = tmp_path_factory.mktemp("small_worker")
    name = f"fitserve_e2e_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    port = free_port()
    with shared_redis_queue("small-worker") as (broker_url, queue):
        env = _base_env(tmp) | {
            "FITSERVE_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
            "FITSERVE_BROKER_URL": broker_url,
            "FITSERVE_QUEUE": queue,
        }
        service = Service("small-worker", f"http://127.0.0.1:{port}", env, tmp)
        try:
            service.fitserve("db", "upgrade")
            service.keys["a"] = service.fitserve("keys", "create", "--tenant", "alpha")
            service.env = env | {
                "FITSERVE_MAX_JOB_MEMORY_BYTES": str(WORKER_LIMIT)
            }  # the worker's own
            service.start("worker")
            service.env = env  # the API keeps the default, 8 GiB
            service.start("api", "--port", str(port))
            service.wait_ready()
            yield service
        finally:
            service.stop()
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_worker_with_less_memory_than_the_api_fails_a_job_past_its_own_limit(
    small_worker: Service,
) -> None:
    with small_worker.client() as client:
        created = client.post("/v1/jobs", json=example("digits_mlp"))
        assert created.status_code == 201, created.text  # within the API's limit
        estimate = created.json()["estimated_memory_bytes"]
        assert estimate > WORKER_LIMIT
        job = wait_for(
            client, created.json()["id"], ("succeeded", "failed", "cancelled"), timeout=120
        )
    assert job["status"] == "failed"
    assert job["reason"] == (
        f"the job's training memory is estimated at {estimate:,} bytes, over this worker's limit of "
        f"{WORKER_LIMIT:,} (MAX_JOB_MEMORY_BYTES where it runs)"
    )
    assert (job["progress"]["epoch"], job["device"], job["attempt"]) == (
        0,
        None,
        1,
    )  # refused before training

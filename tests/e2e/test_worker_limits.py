"""A worker whose own MAX_JOB_MEMORY_BYTES is lower than the API's: the API accepts a job its own
limit allows; the real worker process never claims it, and the job waits with a reason naming the
worker's limit (PostgreSQL, Redis, `fitserve api` and `fitserve worker` as separate processes)."""

from __future__ import annotations

import secrets
import time
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


def test_a_worker_with_less_memory_than_the_api_never_claims_a_job_past_its_own_limit(
    small_worker: Service,
) -> None:
    """The job waits, saying for what; it is never claimed and failed by the small worker."""
    with small_worker.client() as client:
        created = client.post("/v1/jobs", json=example("digits_mlp"))
        assert created.status_code == 201, created.text  # within the API's limit
        estimate = created.json()["estimated_memory_bytes"]
        assert estimate > WORKER_LIMIT
        deadline = time.monotonic() + 4  # several claims and maintenance passes
        while time.monotonic() < deadline:
            job = client.get(f"/v1/jobs/{created.json()['id']}").json()
            assert (job["status"], job["attempt"], job["device"]) == ("queued", 0, None), job
            time.sleep(0.5)
        assert job["reason"].startswith(
            f"waiting for a worker and {estimate:,} bytes of training memory: no live worker can;"
        ), job["reason"]
        assert job["reason"].endswith(
            f"allows a job {WORKER_LIMIT:,} bytes, the job needs {estimate:,}"
        ), job["reason"]
        client.post(f"/v1/jobs/{job['id']}/cancel")
        assert wait_for(client, job["id"], ("cancelled",))["status"] == "cancelled"

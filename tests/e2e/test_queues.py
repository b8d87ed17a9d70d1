"""Queues, resources and the tenants' turns through real processes: `fitserve api` and
`fitserve worker`s on each backend (the embedded SQLite database and broker; PostgreSQL + Redis).

- a `cuda` job with only CPU workers waits with a reason and never trains; with pools declared
  the API refuses it (422 naming `resources.device`);
- three tenants and two workers: the busy tenant's backlog does not hold the others back.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import (
    PG_ADMIN,
    Service,
    _base_env,
    free_port,
    lone_api,
    shared_redis_queue,
    wait_for,
)
from tests.e2e.http import example

TERMINAL = ("succeeded", "failed", "cancelled")


def _cuda(raw: dict[str, Any]) -> dict[str, Any]:
    return raw | {"resources": {"device": "cuda"}}


def test_a_cuda_job_on_cpu_workers_waits_saying_why_and_never_trains(service: Service) -> None:
    with service.client() as client:
        created = client.post("/v1/jobs", json=_cuda(example("digits_mlp")))
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        deadline = time.monotonic() + 4  # several of the worker's claims and maintenance passes
        while time.monotonic() < deadline:
            job = client.get(f"/v1/jobs/{job_id}").json()
            assert (job["status"], job["attempt"], job["device"]) == ("queued", 0, None), job
            time.sleep(0.5)
        assert job["reason"].startswith("waiting for a worker serving CUDA jobs and ") and job[
            "reason"
        ].endswith("serves cpu, not cuda"), job["reason"]
        # meanwhile a job of any device is not held up behind it
        other = client.post("/v1/jobs", json=example("digits_mlp")).json()["id"]
        assert wait_for(client, other, TERMINAL, timeout=120)["status"] == "succeeded"
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
        assert wait_for(client, job_id, TERMINAL)["status"] == "cancelled"


def test_declared_pools_refuse_a_job_none_can_run(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> None:
    pools = '[{"kind": "cpu", "workers": 2, "cpus": 2}]'
    tmp = tmp_path_factory.mktemp("pools")
    with (
        lone_api(tmp, "pools", {"FITSERVE_POOLS": pools}, request) as service,
        service.client() as client,
    ):
        answer = client.post("/v1/jobs", json=_cuda(example("digits_mlp")))
        assert answer.status_code == 422, answer.text
        (error,) = answer.json()["detail"]
        assert error["loc"] == ["body", "resources", "device"]
        assert "runs no cuda workers (its pools: cpu)" in error["msg"]
        nodes = example("digits_mlp") | {"resources": {"nodes": 3}}
        assert client.post("/v1/jobs", json=nodes).status_code == 422


def _two_workers_embedded(tmp: Path) -> Iterator[Service]:
    with lone_api(tmp, "fair", {}) as service:
        yield service


def _two_workers_postgres(tmp: Path) -> Iterator[Service]:
    import psycopg

    name = f"fitserve_e2e_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    port = free_port()
    try:
        with shared_redis_queue("fair") as (broker_url, queue):
            env = _base_env(tmp) | {
                "FITSERVE_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
                "FITSERVE_BROKER_URL": broker_url,
                "FITSERVE_QUEUE": queue,
            }
            service = Service("fair-postgres", f"http://127.0.0.1:{port}", env, tmp)
            service.fitserve("db", "upgrade")
            service.keys["a"] = service.fitserve("keys", "create", "--tenant", "alpha")
            service.start("api", "--port", str(port))
            try:
                service.wait_ready()
                yield service
            finally:
                service.stop()
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def two_workers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """An API, then two `fitserve worker`s (one job each at a time), and tenants b and c."""
    factory = _two_workers_embedded if request.param == "embedded" else _two_workers_postgres
    gen = factory(tmp_path_factory.mktemp(f"fair-{request.param}"))
    service = next(gen)
    for tenant in "bc":
        service.keys[tenant] = service.fitserve("keys", "create", "--tenant", f"tenant-{tenant}")
    for _ in range(2):
        service.start("worker", "--queues", "cpu")
    yield service
    if getattr(request.session, "testsfailed", 0):
        print(f"\n{service.name} service logs:\n{service.tail()}")
    with contextlib.suppress(StopIteration):
        next(gen)


def _live_workers(client: httpx.Client, spec: dict[str, Any], count: int) -> None:
    """Both workers up and claiming: two warm-up jobs finished."""
    ids = [client.post("/v1/jobs", json=spec).json()["id"] for _ in range(count)]
    for job_id in ids:
        assert wait_for(client, job_id, TERMINAL, timeout=180)["status"] == "succeeded"


def test_three_tenants_and_two_workers_take_fair_turns(two_workers: Service) -> None:
    spec = example("digits_mlp")
    spec["fit"] = spec.get("fit", {}) | {"epochs": 5}
    clients = {t: two_workers.client(t) for t in "abc"}
    try:
        _live_workers(clients["a"], spec, 2)
        backlog = [clients["a"].post("/v1/jobs", json=spec).json()["id"] for _ in range(6)]
        others = {
            t: [clients[t].post("/v1/jobs", json=spec).json()["id"] for _ in range(2)] for t in "bc"
        }
        owner = {job_id: "a" for job_id in backlog} | {
            job_id: t for t, ids in others.items() for job_id in ids
        }
        jobs = {
            job_id: wait_for(clients[t], job_id, TERMINAL, timeout=300)
            for job_id, t in owner.items()
        }
    finally:
        for client in clients.values():
            client.close()
    assert {j["status"] for j in jobs.values()} == {"succeeded"}
    order = [owner[j] for j in sorted(jobs, key=lambda j: jobs[j]["started_at"])]
    # FIFO would run a's six first: b and c each start both their jobs before a's fifth
    assert order.index("b") < 3 and order.index("c") < 4, order
    assert len([t for t in order[:6] if t == "a"]) <= 3, order
    assert order[-2:] == ["a", "a"], order

"""Small HTTP helpers the end-to-end tests share."""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.conftest import Service, wait_for
from tests.helpers import EXAMPLES


def example(name: str) -> dict[str, Any]:
    """An examples/ spec as the JSON a client would post."""
    raw: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    return raw


def train_and_read(
    service: Service, raw: dict[str, Any], timeout: float = 120
) -> tuple[str, list[dict[str, Any]]]:
    """Submit a spec, wait for it to succeed; the job id and its metric points (step losses left out)."""
    with service.client() as client:
        created = client.post("/v1/jobs", json=raw)
        assert created.status_code == 201, created.text
        job = wait_for(
            client, created.json()["id"], ("succeeded", "failed", "cancelled"), timeout=timeout
        )
        assert job["status"] == "succeeded", job["reason"]
        points = client.get(f"/v1/jobs/{job['id']}/metrics").json()["data"]
    return job["id"], [p for p in points if p["name"] != "step_loss"]


def predict(
    service: Service, job_id: str, body: dict[str, Any], status: int = 200
) -> dict[str, Any]:
    """POST a predict request; the answer must have `status`."""
    with service.client() as client:
        answer = client.post(f"/v1/models/{job_id}/predict", json=body)
    assert answer.status_code == status, answer.text
    out: dict[str, Any] = answer.json()
    return out


def _job_dirs(service: Service) -> set[str]:
    jobs = service.data_dir / "artifacts" / "jobs"
    return {p.name for p in jobs.iterdir()} if jobs.exists() else set()


def _a_job_of_any_tenant(service: Service, job_id: str) -> bool:
    for tenant in service.keys:
        with service.client(tenant) as client:
            if client.get(f"/v1/jobs/{job_id}").status_code == 200:
                return True
    return False


def refused(service: Service, raw: dict[str, Any]) -> dict[str, Any]:
    """POST a job spec that must be refused with 422, writing nothing to the database or the
    disk; returns the first error."""
    dirs = _job_dirs(service)
    with service.client() as client:
        count = client.get("/v1/jobs").json()["count"]
        answer = client.post("/v1/jobs", json=raw)
        assert answer.status_code == 422, answer.text
        assert client.get("/v1/jobs").json()["count"] == count
    for new in _job_dirs(service) - dirs:  # only a job accepted earlier may have started meanwhile
        assert _a_job_of_any_tenant(service, new), new
    detail: dict[str, Any] = answer.json()["detail"][0]
    return detail

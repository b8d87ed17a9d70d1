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


def train_and_read(service: Service, raw: dict[str, Any], timeout: float = 120) -> tuple[str, list[dict[str, Any]]]:
    """Submit a spec, wait for it to succeed; the job id and its metric points (step losses left out)."""
    with service.client() as client:
        created = client.post("/v1/jobs", json=raw)
        assert created.status_code == 201, created.text
        job = wait_for(client, created.json()["id"], ("succeeded", "failed", "cancelled"), timeout=timeout)
        assert job["status"] == "succeeded", job["reason"]
        points = client.get(f"/v1/jobs/{job['id']}/metrics").json()["data"]
    return job["id"], [p for p in points if p["name"] != "step_loss"]


def predict(service: Service, job_id: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    """POST a predict request; the answer must have `status`."""
    with service.client() as client:
        answer = client.post(f"/v1/models/{job_id}/predict", json=body)
    assert answer.status_code == status, answer.text
    out: dict[str, Any] = answer.json()
    return out


def refused(service: Service, raw: dict[str, Any]) -> dict[str, Any]:
    """POST a job spec that must be refused with 422; returns the first error."""
    with service.client() as client:
        answer = client.post("/v1/jobs", json=raw)
    assert answer.status_code == 422, answer.text
    detail: dict[str, Any] = answer.json()["detail"][0]
    return detail

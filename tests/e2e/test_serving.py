"""Serving as apps rely on it, against the real service on both backends (a real API server and
worker process): models trained by the worker, registered, aliased and promoted; predict by
name, version and alias equal to predict by job id; the registry's answers after a promotion
seen by the next request; another tenant's name refused."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Service, wait_for
from tests.e2e.http import example

ROWS = [[float((i * 7 + j) % 17) for j in range(64)] for i in range(5)]  # raw digits pixels


@pytest.fixture(scope="module")
def jobs(service: Service) -> list[str]:
    """Two digits MLPs (different seeds), both queued before either is awaited."""
    ids = []
    with service.client() as client:
        for seed in (1, 2):
            spec = example("digits_mlp") | {"name": f"serving-{seed}"}
            spec["fit"] |= {"epochs": 2, "seed": seed}
            created = client.post("/v1/jobs", json=spec)
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        for job_id in ids:
            job = wait_for(client, job_id, ("succeeded", "failed", "cancelled"), timeout=180)
            assert job["status"] == "succeeded", job["reason"]
    return ids


def _predict(client: httpx.Client, path: str) -> dict[str, Any]:
    answer = client.post(f"/v1/models/{path}/predict", json={"instances": ROWS})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_register_alias_promote_and_predict_by_alias(service: Service, jobs: list[str]) -> None:
    first, second = jobs
    with service.client() as client:
        by_job = {j: _predict(client, j) for j in jobs}
        assert by_job[first]["probabilities"] != by_job[second]["probabilities"]
        for job_id, aliases in ((first, ["production"]), (second, ["staging"])):
            made = client.post(
                "/v1/models", json={"name": "digits", "job_id": job_id, "aliases": aliases}
            )
            assert made.status_code == 201, made.text
        assert _predict(client, "digits")["job_id"] == second  # the latest
        live = _predict(client, "digits/versions/production")
        assert (live["model"], live["version"], live["job_id"]) == ("digits", 1, first)
        assert live["probabilities"] == by_job[first]["probabilities"]
        assert live["predictions"] == by_job[first]["predictions"]
        staged = _predict(client, "digits/versions/staging")
        assert staged["probabilities"] == by_job[second]["probabilities"]

        # Promote staging's version to production: the very next request is served by it.
        moved = client.put("/v1/models/digits/aliases/production", json={"version": 2})
        assert moved.status_code == 200 and moved.json()["aliases"]["production"] == 2
        promoted = _predict(client, "digits/versions/production")
        assert promoted["version"] == 2 and promoted["job_id"] == second
        assert promoted["probabilities"] == by_job[second]["probabilities"]
        assert _predict(client, "digits/versions/1")["job_id"] == first  # still served by number

        shown = client.get("/v1/models/digits").json()
        assert [(v["version"], v["aliases"]) for v in shown["versions"]] == [
            (1, []),
            (2, ["production", "staging"]),
        ]

    # The SDK's and the CLI's calls go through the same routes: the SDK here, in this process.
    from fitserve_client import Client

    with Client(service.url, service.keys["a"]) as fs:
        answer = fs.models.predict("digits", ROWS, version="production")
        assert answer.version == 2 and answer.job_id == second
        assert fs.models.get("digits").aliases == {"production": 2, "staging": 2}


def test_another_tenants_name_is_not_found(service: Service, jobs: list[str]) -> None:
    with service.client() as owner:
        owner.post("/v1/models", json={"name": "private", "job_id": jobs[0], "aliases": ["live"]})
    with service.client("b") as other:
        for path in ("private", "private/versions/1", "private/versions/live"):
            answer = other.post(f"/v1/models/{path}/predict", json={"instances": ROWS})
            assert answer.status_code == 404, answer.text
            assert answer.json() == {"detail": "model private not found"}
        assert other.get("/v1/models/private").status_code == 404
        assert other.get("/v1/models").json()["data"] == []
        # The other tenant's own model of the same name is its own.
        taken = other.post("/v1/models", json={"name": "private", "job_id": jobs[0]})
        assert taken.status_code == 404  # the job is not theirs either

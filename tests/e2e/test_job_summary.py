"""The two API additions the dashboard reads: GET /v1/jobs/{job_id}/summary (the submit's dry
run and what the model takes) and GET /v1/jobs?name= (a substring filter); the summary's column on both backends."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Service, wait_for
from tests.e2e.http import example

FINISHED = ("succeeded", "failed", "cancelled")


def _submit(client: httpx.Client, spec: dict[str, Any]) -> dict[str, Any]:
    created = client.post("/v1/jobs", json=spec)
    assert created.status_code == 201, created.text
    job: dict[str, Any] = created.json()
    return job


def test_a_jobs_summary_has_its_layers_shapes_and_what_the_model_takes(service: Service) -> None:
    spec = example("digits_mlp") | {"fit": {"epochs": 1}}
    with service.client() as client:
        job = _submit(client, spec)
        summary = client.get(f"/v1/jobs/{job['id']}/summary")
        assert summary.status_code == 200, summary.text
        assert summary.json() == {
            "family": "supervised",
            "operations": ["predict"],
            "parameters": 64 * 512 + 512 + 512 * 10 + 10,
            "estimated_memory_bytes": job["estimated_memory_bytes"],
            "output_shape": [10],
            "layers": [
                {
                    "index": 0,
                    "type": "flatten",
                    "output_shape": [64],
                    "parameters": 0,
                    "network": None,
                },
                {
                    "index": 1,
                    "type": "dense",
                    "output_shape": [512],
                    "parameters": 33280,
                    "network": None,
                },
                {
                    "index": 2,
                    "type": "dense",
                    "output_shape": [10],
                    "parameters": 5130,
                    "network": None,
                },
            ],
            "input": {
                "dataset": "digits",
                "dataset_id": None,
                "kind": "image",
                "task": "classification",
                "input_shape": [1, 8, 8],
                "num_classes": 10,
                "class_names": [str(i) for i in range(10)],
                "feature_names": None,
                "feature_means": None,
                "value_range": [0.0, 16.0],  # digits' raw pixels, what a drawn input is scaled to
            },
        }
        assert wait_for(client, job["id"], FINISHED)["status"] == "succeeded"
        # A GAN's rows name their network.
        gan = _submit(client, example("digits_dcgan") | {"fit": {"epochs": 1}})
        rows = client.get(f"/v1/jobs/{gan['id']}/summary").json()["layers"]
        assert {r["network"] for r in rows} == {"generator", "discriminator"}
        client.post(f"/v1/jobs/{gan['id']}/cancel")
        wait_for(client, gan["id"], FINISHED)
    with service.client("b") as other:
        assert other.get(f"/v1/jobs/{job['id']}/summary").status_code == 404


@pytest.mark.parametrize("service", ["embedded"], indirect=True)  # the column: test one
def test_an_uploads_summary_names_it_and_its_columns(service: Service) -> None:
    rows = ["width,height,kind"] + [
        f"{w},{h},{'tall' if h > w else 'wide'}" for w in range(1, 6) for h in range(1, 6)
    ]
    with service.client() as client:
        up = client.post(
            "/v1/datasets",
            files={"file": ("boxes.csv", "\n".join(rows), "text/csv")},
            data={"name": "boxes"},
        )
        assert up.status_code == 201, up.text
        spec = {
            "name": "boxes",
            "dataset": {"id": up.json()["id"]},
            "model": {"preset": {"name": "mlp", "hidden_units": [8]}},
            "compile": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy"},
            "fit": {"epochs": 1},
        }
        job = _submit(client, spec)
        given = client.get(f"/v1/jobs/{job['id']}/summary").json()["input"]
        wait_for(client, job["id"], FINISHED)
    assert given == {
        "dataset": "boxes",
        "dataset_id": up.json()["id"],
        "kind": "tabular",
        "task": "classification",
        "input_shape": [2],
        "num_classes": 2,
        "class_names": ["tall", "wide"],
        "feature_names": ["width", "height"],
        "feature_means": [3.0, 3.0],
        "value_range": None,
    }


@pytest.mark.parametrize("service", ["embedded"], indirect=True)  # the column: test one
def test_jobs_are_filtered_by_a_part_of_their_name(service: Service) -> None:
    marker = secrets.token_hex(4)
    names = [f"Sweep-{marker}-a", f"sweep-{marker}-b", f"other-{marker}", f"x_{marker}"]
    spec = example("iris_mlp") | {"fit": {"epochs": 1}}
    with service.client() as client:
        ids = [_submit(client, spec | {"name": n})["id"] for n in names]
        for job_id in ids:
            wait_for(client, job_id, FINISHED)

        def listed(**params: Any) -> list[str]:
            answer = client.get("/v1/jobs", params=params)
            assert answer.status_code == 200, answer.text
            assert answer.json()["count"] == len(answer.json()["data"])
            return [j["name"] for j in answer.json()["data"]]

        assert listed(name=f"SWEEP-{marker}") == names[1::-1]  # any case, newest first
        assert listed(name=marker, status="succeeded") == names[::-1]
        # % and _ are plain characters, not LIKE's wildcards
        assert listed(name=f"%{marker}") == []
        assert listed(name=f"_{marker}") == [names[3]]
        assert listed(name="no such job " + marker) == []
        for bad in ("", "x" * 101):
            refused = client.get("/v1/jobs", params={"name": bad})
            assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == [
                "query",
                "name",
            ]
    with service.client("b") as other:
        assert other.get("/v1/jobs", params={"name": marker}).json() == {"data": [], "count": 0}

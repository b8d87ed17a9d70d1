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
        listed = [m["name"] for m in other.get("/v1/models").json()["data"]]
        assert "private" not in listed  # the service is shared: b has models of its own
        # The other tenant's own model of the same name is its own.
        taken = other.post("/v1/models", json={"name": "private", "job_id": jobs[0]})
        assert taken.status_code == 404  # the job is not theirs either


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_by_name_and_alias_answers_as_v1(
    service: Service, jobs: list[str], binary: bool
) -> None:
    """The unmodified Triton client, by a registered name and alias, JSON and binary tensors."""
    from urllib.parse import urlparse

    import numpy as np
    import tritonclient.http as triton

    name = f"triton-{'binary' if binary else 'json'}"
    with service.client() as client:
        made = client.post(
            "/v1/models", json={"name": name, "job_id": jobs[1], "aliases": ["live"]}
        )
        assert made.status_code == 201, made.text
        v1 = _predict(client, f"{name}/versions/live")
    x = np.asarray(ROWS, np.float32).reshape(len(ROWS), 1, 8, 8)
    instances = triton.InferInput("instances", list(x.shape), "FP32")
    instances.set_data_from_numpy(x, binary_data=binary)
    wanted = [
        triton.InferRequestedOutput(n, binary_data=binary)
        for n in ("predictions", "class_ids", "probabilities")
    ]
    c = triton.InferenceServerClient(urlparse(service.url).netloc, network_timeout=60)
    auth = {"Authorization": f"Bearer {service.keys['a']}"}
    assert c.is_model_ready(name, model_version="live", headers=auth)
    result = c.infer(name, [instances], model_version="live", outputs=wanted, headers=auth)
    assert result.as_numpy("probabilities").tolist() == v1["probabilities"]
    assert result.as_numpy("class_ids").tolist() == v1["class_ids"]
    names = result.as_numpy("predictions").tolist()  # BYTES: bytes from binary, str from JSON
    assert [n.decode() if isinstance(n, bytes) else n for n in names] == v1["predictions"]
    with pytest.raises(triton.InferenceServerException, match="not found"):
        other = {"Authorization": f"Bearer {service.keys['b']}"}
        c.infer(name, [instances], model_version="live", outputs=wanted, headers=other)


def test_an_onnx_export_answers_as_served(service: Service, jobs: list[str]) -> None:
    """GET .../export?format=onnx by name and alias; onnxruntime on the archive's graph answers
    as /v1 predict within 1e-5, from raw pixels (the preprocessing is in the graph)."""
    import io
    import json
    import zipfile

    import numpy as np
    import onnxruntime as ort

    with service.client() as client:
        body = {"name": "exported", "job_id": jobs[0], "aliases": ["production"]}
        assert client.post("/v1/models", json=body).status_code == 201
        answer = client.get(
            "/v1/models/exported/versions/production/export", params={"format": "onnx"}
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/zip"
        served = _predict(client, "exported/versions/production")
        refused = client.get("/v1/models/exported/export", params={"format": "pickle"})
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == [
            "query",
            "format",
        ]
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    signature = json.loads(archive.read("signature.json"))
    graph = signature["operations"]["predict"]
    session = ort.InferenceSession(archive.read(graph["file"]))
    x = np.asarray(ROWS, np.float32).reshape(len(ROWS), *signature["input_shape"])
    probabilities, class_ids = session.run(None, {"instances": x})
    assert np.allclose(probabilities, served["probabilities"], atol=1e-5)
    assert class_ids.tolist() == served["class_ids"]

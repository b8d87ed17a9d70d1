"""The Open Inference Protocol v2 end to end: a real server and worker, one digits MLP trained once,
called by the unmodified tritonclient (JSON and binary tensors) and by a request written as the
protocol's documentation writes it; answers equal /v1 predict's.

On the embedded backend only: alone, the module took 2 min 20 s on both (the service starts and the
job trains once per backend), and /v2 shares its model resolution and serving with /v1 predict,
which test_service.py runs on both."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from core.datasets import load_builtin
from core.spec import DatasetSpec
from tests.e2e.conftest import Service
from tests.e2e.http import example, predict, train_and_read

pytestmark = pytest.mark.parametrize("service", ["embedded"], indirect=True)


@pytest.fixture(scope="session")
def digits_job(service: Service) -> str:
    raw = example("digits_mlp")
    raw["fit"]["epochs"] = 2
    job_id, _ = train_and_read(service, raw)
    return job_id


def client(service: Service) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(urlparse(service.url).netloc, network_timeout=60)


def auth(service: Service, tenant: str = "a") -> dict[str, str]:
    return {"Authorization": f"Bearer {service.keys[tenant]}"}


def pixels(n: int) -> np.ndarray:
    return load_builtin(DatasetSpec(name="digits"), seed=0).x[:n].astype(np.float32)


def test_health_metadata_and_readiness(service: Service, digits_job: str) -> None:
    c = client(service)
    assert c.is_server_live() and c.is_server_ready()
    assert c.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    meta = c.get_model_metadata(digits_job, headers=auth(service))
    assert meta["name"] == digits_job and meta["platform"] == "pytorch"
    assert meta["inputs"] == [{"name": "instances", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert [o["name"] for o in meta["outputs"]] == ["predictions", "class_ids", "probabilities"]
    assert c.is_model_ready(digits_job, headers=auth(service))


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_infer_answers_as_v1_predict(
    service: Service, digits_job: str, binary: bool
) -> None:
    x = pixels(6)
    instances = triton.InferInput("instances", list(x.shape), "FP32")
    instances.set_data_from_numpy(x, binary_data=binary)
    outputs = [
        triton.InferRequestedOutput(name, binary_data=binary)
        for name in ("predictions", "class_ids", "probabilities")
    ]
    result = client(service).infer(
        digits_job, [instances], outputs=outputs, request_id="e2e", headers=auth(service)
    )
    v1 = predict(service, digits_job, {"instances": x.tolist()})
    names = result.as_numpy("predictions")
    assert [n.decode() if isinstance(n, bytes) else n for n in names] == v1["predictions"]
    assert result.as_numpy("class_ids").tolist() == v1["class_ids"]
    assert result.as_numpy("probabilities").tolist() == v1["probabilities"]
    response = result.get_response()
    assert response["id"] == "e2e" and response["model_name"] == digits_job
    assert ("parameters" in response["outputs"][0]) == binary  # binary_data_size when binary


def test_the_specifications_example_request(service: Service, digits_job: str) -> None:
    """From the Open Inference Protocol's REST specification, "Inference Request Examples"
    (github.com/kserve/open-inference-protocol, specification/protocol/inference_rest.md), sent as
    written there with only the model name, the input's name and shape (so its data: 2 x 64 UINT32
    pixel values) and the output's name ours; "input1" is left out: our model has one input."""
    x = pixels(2)
    text = """{
      "id" : "42",
      "inputs" : [
        {
          "name" : "instances",
          "shape" : [ 2, 64 ],
          "datatype" : "UINT32",
          "data" : PIXELS
        }
      ],
      "outputs" : [
        {
          "name" : "class_ids"
        }
      ]
    }""".replace("PIXELS", json.dumps(x.astype(np.uint32).ravel().tolist()))
    answer = httpx.post(
        f"{service.url}/v2/models/{digits_job}/infer",
        content=text,
        headers={**auth(service), "Content-Type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert out["id"] == "42"
    v1 = predict(service, digits_job, {"instances": x.tolist()})
    assert out["outputs"] == [
        {"name": "class_ids", "datatype": "INT64", "shape": [2], "data": v1["class_ids"]}
    ]


def test_another_tenant_gets_404_and_no_key_401(service: Service, digits_job: str) -> None:
    base = f"{service.url}/v2/models/{digits_job}"
    body: dict[str, Any] = {
        "inputs": [{"name": "instances", "shape": [1, 64], "datatype": "FP32", "data": [0] * 64}]
    }
    for method, url in (("GET", base), ("GET", f"{base}/ready"), ("POST", f"{base}/infer")):
        other = httpx.request(method, url, json=body, headers=auth(service, "b"))
        assert other.status_code == 404 and "error" in other.json(), (url, other.text)
        assert httpx.request(method, url, json=body).status_code == 401
    c = client(service)
    assert not c.is_model_ready(digits_job, headers=auth(service, "b"))
    with pytest.raises(InferenceServerException) as caught:
        c.get_model_metadata(digits_job, headers=auth(service, "b"))
    assert caught.value.status() == "404"

"""The Open Inference Protocol v2 (REST): the tensor codec alone, then the /v2 routes in-process on
a real SQLite database with a trained digits classifier, its requests built by the unmodified
tritonclient's own codec (JSON and binary) and by hand from the protocol's documentation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient

from api.limits import body_limits
from api.oip import (
    OipError,
    OutputTensor,
    decode_binary,
    decode_json_data,
    encode_response,
    parse_request,
)
from core.datasets import load_builtin
from core.settings import get_settings
from core.spec import DatasetSpec
from core.storage import job_dir
from tests.helpers import digits_mlp

# -- the codec ---------------------------------------------------------------------------------


def test_json_data_is_read_flat_or_nested_in_its_datatype() -> None:
    flat = decode_json_data([1, 2, 3, 4], "UINT32", (2, 2), "input 'x'")
    nested = decode_json_data([[1, 2], [3, 4]], "UINT32", (2, 2), "input 'x'")
    assert flat.dtype == np.uint32 and flat.shape == (2, 2) and (flat == nested).all()
    assert decode_json_data([1, 2.5], "FP32", (2,), "x").dtype == np.float32
    assert decode_json_data([True, False], "BOOL", (2,), "x").tolist() == [True, False]
    assert decode_json_data(["a", "bé"], "BYTES", (2,), "x").tolist() == [b"a", "bé".encode()]
    assert decode_json_data([], "INT64", (0, 3), "x").shape == (0, 3)


@pytest.mark.parametrize(
    ("data", "datatype", "shape", "message"),
    [
        ([1, 2, 3], "FP32", (2, 2), "input 'x': shape [2, 2] holds 4 values; data has 3"),
        ([[1, 2], [3]], "FP32", (3,), "input 'x': data must be a regular array of FP32 values"),
        ([1.5, 2], "INT64", (2,), "input 'x': data must hold INT64 values (JSON integers)"),
        (["1", "2"], "FP32", (2,), "input 'x': data must hold FP32 values (JSON numbers)"),
        ([1, 0], "BOOL", (2,), "input 'x': data must hold BOOL values (JSON booleans)"),
        ([300], "UINT8", (1,), "input 'x': a value lies outside UINT8's range"),
        ([-1], "UINT32", (1,), "input 'x': a value lies outside UINT32's range"),
        ([1], "FP128", (1,), "input 'x': datatype must be one of BOOL, UINT8"),
        ({"a": 1}, "FP32", (1,), "input 'x': data must be a JSON array"),
    ],
)
def test_json_data_that_does_not_fit_is_refused_naming_the_input(
    data: Any, datatype: str, shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(OipError) as caught:
        decode_json_data(data, datatype, shape, "input 'x'")
    assert caught.value.message.startswith(message) and caught.value.status == 400


def test_binary_tensors_are_views_of_the_body() -> None:
    body = bytearray(np.arange(6, dtype="<f4").tobytes())
    a = decode_binary(memoryview(body), "FP32", (2, 3), "x")
    assert a.tolist() == [[0, 1, 2], [3, 4, 5]] and not a.flags.owndata  # no copy made
    assert decode_binary(memoryview(b"\x01\x00\x01"), "BOOL", (3,), "x").tolist() == [
        True,
        False,
        True,
    ]
    with pytest.raises(
        OipError, match="x: shape \\[2, 3\\] of FP32 takes 24 bytes; binary_data_size is 20"
    ):
        decode_binary(memoryview(body)[:20], "FP32", (2, 3), "x")
    with pytest.raises(OipError, match="byte 0 or 1"):
        decode_binary(memoryview(b"\x02"), "BOOL", (1,), "x")
    with pytest.raises(OipError, match="ends inside an element"):
        decode_binary(memoryview(b"\x05\x00\x00\x00ab"), "BYTES", (1,), "x")


def test_tritonclients_binary_request_parses_to_its_arrays() -> None:
    """The request body built by the unmodified client: one binary input, one JSON input."""
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    ids = np.array([[7, -2]], dtype=np.int64)
    first, second = (
        triton.InferInput("x", [3, 4], "FP32"),
        triton.InferInput("ids", [1, 2], "INT64"),
    )
    first.set_data_from_numpy(x, binary_data=True)
    second.set_data_from_numpy(ids, binary_data=False)
    out = triton.InferRequestedOutput("y", binary_data=True)
    body, length = triton.InferenceServerClient.generate_request_body(
        [first, second], outputs=[out], request_id="r1", parameters={"operation": "predict"}
    )
    req = parse_request(body, str(length))
    assert (req.inputs["x"] == x).all() and req.inputs["x"].dtype == np.float32
    assert (req.inputs["ids"] == ids).all() and req.id == "r1"
    assert req.outputs is not None and req.outputs[0].name == "y" and req.outputs[0].binary
    assert req.parameters == {"operation": "predict"} and not req.binary_output


@pytest.mark.parametrize(
    ("body", "length", "message"),
    [
        (b"{", None, "the inference request is not valid JSON"),
        (b"[]", None, "the inference request must be a JSON object"),
        (b'{"inputs": {}}', None, "inputs must be a list of tensors"),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}',
            None,
            "input 'x': give data",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]}',
            None,
            "input 'x': shape must be",
        ),
        (b'{"inputs": [], "bogus": 1}', None, "the inference request has unknown fields: bogus"),
        (b"{}", "x", "Inference-Header-Content-Length must be a non-negative integer"),
        (
            b'{"inputs": [], "parameters": {"binary_data_output": "yes"}}',
            None,
            "parameter 'binary_data_output' must be true or false",
        ),
        (b"{}", "0", "Inference-Header-Content-Length: 0 (a raw binary request) is not supported"),
        (b"{}", "3", "Inference-Header-Content-Length is 3; the body has 2 bytes"),
        (
            b'{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}',
            None,
            "input 'x' has binary data: the Inference-Header-Content-Length header must",
        ),
    ],
)
def test_malformed_requests_are_400s_naming_the_field(
    body: bytes, length: str | None, message: str
) -> None:
    with pytest.raises(OipError) as caught:
        parse_request(body, length)
    assert caught.value.message.startswith(message), caught.value.message


def test_binary_sizes_must_add_up_to_the_body() -> None:
    head = b'{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}'
    tensor = np.ones(2, "<f4").tobytes()
    assert parse_request(head + tensor, str(len(head))).inputs["x"].tolist() == [1.0, 1.0]
    with pytest.raises(OipError, match="runs past the end of the body \\(4 bytes left\\)"):
        parse_request(head + tensor[:4], str(len(head)))
    with pytest.raises(OipError, match="3 bytes follow the inputs' binary data"):
        parse_request(head + tensor + b"abc", str(len(head)))


def test_responses_read_back_through_tritonclient() -> None:
    names = np.array([b"cat", "héron".encode()], dtype=object)
    probs = np.array([[0.25, 0.75], [1.0, 0.0]], dtype=np.float32)
    ids = np.array([1, 0], dtype=np.int64)
    outputs = [
        OutputTensor("predictions", "BYTES", names, True),
        OutputTensor("probabilities", "FP32", probs, True),
        OutputTensor("class_ids", "INT64", ids, False),
    ]
    body, length = encode_response({"model_name": "m", "id": "9"}, outputs)
    assert length is not None and json.loads(body[:length])["outputs"][2]["data"] == [1, 0]
    result = triton.InferenceServerClient.parse_response_body(body, header_length=length)
    assert result.as_numpy("predictions").tolist() == names.tolist()
    assert (result.as_numpy("probabilities") == probs).all()
    assert result.as_numpy("class_ids").tolist() == [1, 0]
    assert result.get_response()["id"] == "9"
    plain, none = encode_response({"model_name": "m"}, outputs[2:])
    assert none is None and json.loads(plain)["outputs"][0]["shape"] == [2]


def test_the_infer_path_takes_predicts_body_limit() -> None:
    settings = get_settings()
    limit_for = body_limits(settings)
    assert limit_for("/v2/models/abc/infer") == settings.predict_max_bytes
    assert limit_for("/v2/models/abc/versions/2/infer") == settings.predict_max_bytes
    assert limit_for("/v2/models/abc") == settings.json_max_bytes


# -- the routes --------------------------------------------------------------------------------


@dataclass
class Served:
    client: TestClient
    job_id: str
    queued_id: str
    key: str
    other_key: str

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}


@pytest.fixture(scope="module")
def served(sqlite_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A tenant's trained digits MLP (2 epochs) behind an in-process app; another tenant's key."""
    from core.db import session_scope
    from core.repository import tenants as tenants_repo
    from core.tables import Job
    from worker.datasource import load_train_data
    from worker.training.engine import train

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FITSERVE_DATABASE_URL", sqlite_url)
        patch.setenv("FITSERVE_DATA_DIR", str(tmp_path_factory.mktemp("oip")))
        for name in ("FITSERVE_BROKER_URL", "FITSERVE_RATE_LIMIT_PER_SECOND"):
            patch.delenv(name, raising=False)
        get_settings.cache_clear()
        with session_scope() as session:
            tenant = tenants_repo.get_or_create_tenant(session=session, name="oip-a")
            other = tenants_repo.get_or_create_tenant(session=session, name="oip-b")
            key = tenants_repo.create_key(session=session, tenant=tenant)
            other_key = tenants_repo.create_key(session=session, tenant=other)
            job = Job(tenant_id=tenant.id, name="digits", spec={}, status="succeeded")
            queued = Job(tenant_id=tenant.id, name="later", spec={}, status="queued")
            session.add_all([job, queued])
            session.flush()
            job_id, queued_id = job.id, queued.id
        spec = digits_mlp(epochs=2)
        train(spec, load_train_data(spec), job_dir(get_settings().artifacts_dir, job_id))
        from api.main import create_app

        yield Served(TestClient(create_app()), job_id, queued_id, key, other_key)
    get_settings.cache_clear()


def digits(n: int) -> np.ndarray:
    return load_builtin(DatasetSpec(name="digits"), seed=0).x[:n]


def v1_predict(served: Served, x: np.ndarray) -> dict[str, Any]:
    answer = served.client.post(
        f"/v1/models/{served.job_id}/predict",
        json={"instances": x.tolist()},
        headers=served.headers(),
    )
    assert answer.status_code == 200, answer.text
    out: dict[str, Any] = answer.json()
    return out


def test_health_and_server_metadata_are_public(served: Served) -> None:
    client = served.client
    assert client.get("/v2/health/live").json() == {"live": True}
    meta = client.get("/v2").json()
    assert meta["name"] == "fitserve" and meta["extensions"] == ["binary_tensor_data"]


def test_model_metadata_and_readiness(served: Served) -> None:
    url = f"/v2/models/{served.job_id}"
    meta = served.client.get(url, headers=served.headers())
    assert meta.status_code == 200, meta.text
    shape = list(digits(1).shape[1:])
    assert meta.json() == {
        "name": served.job_id,
        "platform": "pytorch",
        "inputs": [{"name": "instances", "datatype": "FP32", "shape": [-1, *shape]}],
        "outputs": [
            {"name": "predictions", "datatype": "BYTES", "shape": [-1]},
            {"name": "class_ids", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
        ],
    }
    ready = served.client.get(f"{url}/ready", headers=served.headers())
    assert ready.status_code == 200 and ready.json() == {"name": served.job_id, "ready": True}


def test_json_infer_answers_as_v1_predict(served: Served) -> None:
    x = digits(5)
    body = {
        "id": "a1",
        "inputs": [
            {
                "name": "instances",
                "shape": list(x.shape),
                "datatype": "FP64",
                "data": x.ravel().tolist(),
            }
        ],
    }
    answer = served.client.post(
        f"/v2/models/{served.job_id}/infer", json=body, headers=served.headers()
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    out = answer.json()
    assert out["model_name"] == served.job_id and out["id"] == "a1"
    assert out["parameters"] == {"operation": "predict"}
    tensors = {t["name"]: t for t in out["outputs"]}
    assert list(tensors) == ["predictions", "class_ids", "probabilities"]
    v1 = v1_predict(served, x)
    assert tensors["predictions"] == {
        "name": "predictions",
        "datatype": "BYTES",
        "shape": [5],
        "data": v1["predictions"],
    }
    assert (
        tensors["class_ids"]["data"] == v1["class_ids"]
        and tensors["class_ids"]["datatype"] == "INT64"
    )
    assert tensors["probabilities"]["shape"] == [5, 10]
    assert tensors["probabilities"]["data"] == [p for row in v1["probabilities"] for p in row]


def test_binary_infer_through_tritonclients_codec(served: Served) -> None:
    """The unmodified client's request body and its reading of our answer; flat instances too."""
    x = digits(4).reshape(4, -1).astype(np.float32)
    instances = triton.InferInput("instances", list(x.shape), "FP32")
    instances.set_data_from_numpy(x, binary_data=True)
    outputs = [
        triton.InferRequestedOutput("probabilities", binary_data=True),
        triton.InferRequestedOutput("class_ids", binary_data=False),
    ]
    body, length = triton.InferenceServerClient.generate_request_body([instances], outputs=outputs)
    answer = served.client.post(
        f"/v2/models/{served.job_id}/infer",
        content=body,
        headers={**served.headers(), "Inference-Header-Content-Length": str(length)},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/octet-stream"
    header_length = int(answer.headers["inference-header-content-length"])
    result = triton.InferenceServerClient.parse_response_body(
        answer.content, header_length=header_length
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["probabilities", "class_ids"]
    v1 = v1_predict(served, x)
    assert result.as_numpy("class_ids").tolist() == v1["class_ids"]
    assert result.as_numpy("probabilities").dtype == np.float32
    assert result.as_numpy("probabilities").tolist() == v1["probabilities"]


def test_binary_data_output_for_every_output(served: Served) -> None:
    """With no outputs named the client asks binary_data_output: BYTES come back length-prefixed."""
    x = digits(3).astype(np.float32)
    instances = triton.InferInput("instances", list(x.shape), "FP32")
    instances.set_data_from_numpy(x, binary_data=False)
    body, length = triton.InferenceServerClient.generate_request_body([instances])
    assert length is None and json.loads(body)["parameters"] == {"binary_data_output": True}
    answer = served.client.post(
        f"/v2/models/{served.job_id}/infer", content=body, headers=served.headers()
    )
    assert answer.status_code == 200, answer.text
    result = triton.InferenceServerClient.parse_response_body(
        answer.content, header_length=int(answer.headers["inference-header-content-length"])
    )
    v1 = v1_predict(served, x)
    assert [s.decode() for s in result.as_numpy("predictions")] == v1["predictions"]
    assert result.as_numpy("class_ids").tolist() == v1["class_ids"]


def test_the_specifications_example_request(served: Served) -> None:
    """Copied from the Open Inference Protocol's REST specification, "Inference Request Examples"
    (github.com/kserve/open-inference-protocol, specification/protocol/inference_rest.md): only the
    model name, the input's name and shape (and so its data: 2 x 64 UINT32 values, two digits'
    pixels, where the spec has 4 values for [2, 2]) and the output's name are ours; "input1" is
    left out (our model has one input)."""
    pixels = digits(2).astype(np.uint32).ravel().tolist()
    text = """
    {
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
    }
    """.replace("PIXELS", json.dumps(pixels))
    answer = served.client.post(
        f"/v2/models/{served.job_id}/infer",
        content=text,
        headers={**served.headers(), "Content-Type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert out["id"] == "42" and [o["name"] for o in out["outputs"]] == ["class_ids"]
    assert out["outputs"][0]["data"] == v1_predict(served, digits(2))["class_ids"]


def test_the_binary_extensions_example_request(served: Served) -> None:
    """The binary tensor data extension's example (github.com/triton-inference-server/server,
    docs/protocol/extension_binary_data.md): "input0" renamed instances, shape [2, 64] (512 bytes
    of UINT32 where the example has 16), "output0" renamed probabilities, "input1" left out."""
    pixels = digits(2).astype("<u4")
    header = b"""{
  "model_name" : "mymodel",
  "inputs" : [
    {
      "name" : "instances",
      "shape" : [ 2, 64 ],
      "datatype" : "UINT32",
      "parameters" : {
        "binary_data_size" : 512
      }
    }
  ],
  "outputs" : [
    {
      "name" : "probabilities",
      "parameters" : {
        "binary_data" : true
      }
    }
  ]
}"""
    answer = served.client.post(
        f"/v2/models/{served.job_id}/infer",
        content=header + pixels.tobytes(),
        headers={
            **served.headers(),
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        },
    )
    assert answer.status_code == 200, answer.text
    length = int(answer.headers["inference-header-content-length"])
    head = json.loads(answer.content[:length])
    assert head["outputs"] == [
        {
            "name": "probabilities",
            "datatype": "FP32",
            "shape": [2, 10],
            "parameters": {"binary_data_size": 80},
        }
    ]
    probs = np.frombuffer(answer.content[length:], dtype="<f4").reshape(2, 10)
    assert probs.tolist() == v1_predict(served, digits(2))["probabilities"]


def infer(served: Served, body: dict[str, Any], key: str | None = None) -> Any:
    return served.client.post(
        f"/v2/models/{served.job_id}/infer", json=body, headers=served.headers(key)
    )


def instances(shape: list[int], datatype: str = "FP32") -> dict[str, Any]:
    return {
        "name": "instances",
        "shape": shape,
        "datatype": datatype,
        "data": [0] * int(np.prod(shape)),
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"inputs": [instances([2, 3])]},
            "input 'instances': each instance must have shape [1, 8, 8] (64 values)",
        ),
        ({"inputs": [instances([0, 64])]}, "input 'instances': give at least one instance"),
        (
            {"inputs": [instances([1025, 64])]},
            "input 'instances': at most 1024 instances per request",
        ),
        ({"inputs": [{**instances([1, 64]), "name": "x"}]}, "input 'x' is not an input of predict"),
        (
            {"inputs": [instances([1, 64]), {**instances([1]), "name": "labels"}]},
            "input 'labels' is not an input",
        ),
        (
            {"inputs": [instances([1, 64])], "parameters": {"operation": "generate"}},
            "parameter 'operation': 'generate' is not an operation",
        ),
        (
            {"inputs": [instances([1, 64])], "parameters": {"count": 3}},
            "parameter 'count' is not read by predict",
        ),
        (
            {"inputs": [instances([1, 64])], "outputs": [{"name": "classes"}]},
            "output 'classes' is not an output here",
        ),
        (
            {"inputs": [{**instances([1, 64], "BYTES"), "data": ["a"] * 64}]},
            "input 'instances': instances must be numbers",
        ),
        (
            {"inputs": [{**instances([1, 64]), "data": [float("nan")] * 64}]},
            "input 'instances': instances must hold finite numbers",
        ),
    ],
)
def test_bad_inputs_are_400s_naming_what_is_wrong(
    served: Served, body: dict[str, Any], message: str
) -> None:
    answer = served.client.post(
        f"/v2/models/{served.job_id}/infer",
        content=json.dumps(body),  # NaN is a token Python's JSON writes and reads
        headers=served.headers(),
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].startswith(message), answer.json()


def test_another_tenants_model_is_404_and_no_key_401_on_every_route(served: Served) -> None:
    base = f"/v2/models/{served.job_id}"
    body = {"inputs": [instances([1, 64])]}
    for path in (base, f"{base}/ready", f"{base}/versions/1", f"{base}/versions/1/ready"):
        other = served.client.get(path, headers=served.headers(served.other_key))
        assert other.status_code == 404 and "error" in other.json(), (path, other.text)
        assert served.client.get(path).status_code == 401
    for path in (f"{base}/infer", f"{base}/versions/1/infer"):
        other = served.client.post(path, json=body, headers=served.headers(served.other_key))
        assert other.status_code == 404 and "error" in other.json(), (path, other.text)
        assert served.client.post(path, json=body).status_code == 401
    wrong = served.client.get(base, headers=served.headers("fs_not-a-key"))
    assert wrong.status_code == 401


def test_a_model_that_has_not_succeeded_is_409(served: Served) -> None:
    base = f"/v2/models/{served.queued_id}"
    assert served.client.get(f"{base}/ready", headers=served.headers()).status_code == 409
    answer = served.client.post(
        f"{base}/infer", json={"inputs": [instances([1, 64])]}, headers=served.headers()
    )
    assert answer.status_code == 409 and "queued" in answer.json()["error"]


def test_an_oversized_infer_body_is_refused_before_it_is_read(served: Served) -> None:
    limit = get_settings().predict_max_bytes
    answer = served.client.post(
        f"/v2/models/{served.job_id}/infer",
        content=b"{" + b" " * limit + b"}",
        headers=served.headers(),
    )
    assert answer.status_code == 413
    # the key is checked first: without one, the same body is a 401 from the headers alone
    anonymous = served.client.post(
        f"/v2/models/{served.job_id}/infer", content=b"{" + b" " * limit + b"}"
    )
    assert anonymous.status_code == 401


# -- every family: /v2 infer answers as /v1 predict, in the datatypes and shapes described ------

FAMILY_EXAMPLES = {  # example -> fit.epochs: the fewest each trains with
    "digits_autoencoder": 1,
    "digits_vae": 1,
    "digits_cgan": 1,
    "gaussian_mixture_gan": 1,
    "digits_rbm": 1,
    "digits_dbn": 7,  # pretraining takes 6
    "reverse_seq2seq": 1,
}


@pytest.fixture(scope="module")
def family_jobs(served: Served) -> dict[str, str]:
    """example name -> the id of a succeeded job of it (the served tenant's)."""
    from core.db import session_scope
    from core.repository import tenants as tenants_repo
    from core.tables import Job
    from tests.helpers import example
    from worker.datasource import load_train_data
    from worker.training.engine import train

    jobs = {}
    for name, epochs in FAMILY_EXAMPLES.items():
        with session_scope() as session:
            tenant = tenants_repo.get_or_create_tenant(session=session, name="oip-a")
            job = Job(tenant_id=tenant.id, name=name, spec={}, status="succeeded")
            session.add(job)
            session.flush()
            jobs[name] = job.id
        spec = example(name, epochs=epochs)
        train(spec, load_train_data(spec), job_dir(get_settings().artifacts_dir, jobs[name]))
    return jobs


def _tensor(name: str, value: Any, datatype: str) -> dict[str, Any]:
    a = np.asarray(value)
    return {"name": name, "shape": list(a.shape), "datatype": datatype, "data": a.ravel().tolist()}


def _cases() -> list[tuple[str, str, dict[str, Any]]]:
    """(example, operation, /v1 body less the operation); /v2 sends the same as tensors and
    parameters. `CODE` stands for the code vectors the model's encode answers."""
    pixels = digits(3).tolist()
    return [
        ("digits_autoencoder", "reconstruct", {"instances": pixels}),
        ("digits_autoencoder", "encode", {"instances": pixels}),
        ("digits_autoencoder", "decode", {"instances": "CODE"}),
        ("digits_vae", "reconstruct", {"instances": pixels}),
        ("digits_vae", "encode", {"instances": pixels}),
        ("digits_vae", "decode", {"instances": "CODE"}),
        ("digits_vae", "sample", {"count": 3, "seed": 5}),
        ("digits_cgan", "generate", {"labels": [3, 7], "seed": 0}),
        ("digits_cgan", "discriminate", {"instances": pixels, "labels": [0, 1, 2]}),
        ("gaussian_mixture_gan", "generate", {"count": 4, "seed": 1}),
        ("gaussian_mixture_gan", "discriminate", {"instances": [[0.5, -0.5], [1.0, 2.0]]}),
        ("digits_rbm", "transform", {"instances": pixels}),
        ("digits_rbm", "reconstruct", {"instances": pixels}),
        ("digits_dbn", "predict", {"instances": pixels}),
        ("digits_dbn", "transform", {"instances": pixels}),
        ("reverse_seq2seq", "predict", {"instances": "TOKENS"}),
    ]


@pytest.mark.parametrize(("name", "operation", "v1"), _cases(), ids=lambda c: str(c))
def test_each_familys_operations_answer_as_v1_predict(
    served: Served, family_jobs: dict[str, str], name: str, operation: str, v1: dict[str, Any]
) -> None:
    from api.oip_models import describe
    from models.inference import Predictor

    job_id = family_jobs[name]
    predictor = Predictor.load(job_dir(get_settings().artifacts_dir, job_id))
    io = describe(predictor, operation)
    url = f"/v1/models/{job_id}/predict"
    if v1.get("instances") == "CODE":
        encoded = served.client.post(
            url,
            json={"operation": "encode", "instances": digits(3).tolist()},
            headers=served.headers(),
        )
        v1 = {"instances": encoded.json()["predictions"]}
    if v1.get("instances") == "TOKENS":
        length = io.inputs[0].shape[1]
        v1 = {"instances": [[(i + j) % 5 + 1 for j in range(length)] for i in range(3)]}
    expected = served.client.post(
        url, json={"operation": operation, **v1}, headers=served.headers()
    )
    assert expected.status_code == 200, expected.text
    spec_of = {t.name: t for t in io.inputs}
    inputs = [_tensor(k, v1[k], spec_of[k].datatype) for k in ("instances", "labels") if k in v1]
    parameters = {"operation": operation, **{k: v1[k] for k in ("count", "seed") if k in v1}}
    answer = served.client.post(
        f"/v2/models/{job_id}/infer",
        json={"inputs": inputs, "parameters": parameters},
        headers=served.headers(),
    )
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert list(outputs) == [t.name for t in io.outputs]  # every output described, in order
    for described in io.outputs:
        out, want = outputs[described.name], np.asarray(expected.json()[described.name])
        assert out["datatype"] == described.datatype
        assert out["shape"] == list(want.shape) and len(out["shape"]) == len(described.shape)
        assert all(d in (-1, s) for d, s in zip(described.shape, out["shape"], strict=True))
        assert out["data"] == want.ravel().tolist()

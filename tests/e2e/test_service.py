"""End to end through HTTP, a real API server and a real Celery worker, on both backends."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import httpx
import numpy as np
import pytest

from core.datasets import load_builtin
from core.preprocessing import split_indices
from core.spec import DatasetSpec
from tests.e2e.conftest import UPLOAD_LIMIT, Service, wait_for
from tests.helpers import EXAMPLES

EPOCH_METRICS = {
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "epoch_seconds",
    "samples_per_second",
}


def keras_mnist_spec_on_digits() -> dict[str, Any]:
    """The lecture's Keras MNIST example (flatten, dense 512 relu, dense 10 softmax, adam, 5 epochs, batch 32)."""
    return json.loads((EXAMPLES / "digits_mlp.json").read_text())


@pytest.fixture(scope="session")
def trained(service: Service) -> dict[str, Any]:
    with service.client() as client:
        created = client.post("/v1/jobs", json=keras_mnist_spec_on_digits())
        assert created.status_code == 201, created.text
        assert created.json()["status"] == "queued"
        return wait_for(client, created.json()["id"], ("succeeded", "failed", "cancelled"))


def test_job_succeeds_with_one_metric_row_per_epoch(
    service: Service, trained: dict[str, Any]
) -> None:
    assert trained["status"] == "succeeded", trained["reason"]
    assert trained["reason"] == "completed 5 epochs"
    assert trained["progress"] == {"epoch": 5, "epochs": 5, "step": 45, "steps": 45}
    assert trained["parameters"] == 64 * 512 + 512 + 512 * 10 + 10 and trained["attempt"] == 1
    assert (trained["device"], trained["precision"]) == (
        "cpu",
        "fp32",
    )  # set by the first attempt, kept by any other
    with service.client() as client:
        points = client.get(f"/v1/jobs/{trained['id']}/metrics").json()["data"]
        for name in EPOCH_METRICS:
            series = [p for p in points if p["name"] == name]
            assert [p["epoch"] for p in series] == [1, 2, 3, 4, 5], name
        keys = [(p["step"], p["name"]) for p in points]
        assert len(keys) == len(set(keys))
        assert {p["name"] for p in points} == EPOCH_METRICS | {"step_loss"}
        val = client.get(
            f"/v1/jobs/{trained['id']}/metrics", params={"name": "val_accuracy", "since_step": 180}
        )
        assert [p["epoch"] for p in val.json()["data"]] == [5]
        checkpoints = client.get(f"/v1/jobs/{trained['id']}/checkpoints").json()
        # fit.keep_checkpoints (3) pruned epochs 1 and 2: only what exists is listed (all 5 were, before).
        assert [c["epoch"] for c in checkpoints["data"]] == [3, 4, 5] and checkpoints[
            "resume_from"
        ] == 5
        assert all(len(c["sha256"]) == 64 for c in checkpoints["data"])
        on_disk = service.data_dir / "artifacts" / "jobs" / trained["id"] / "checkpoints"
        assert sorted(p.name for p in on_disk.glob("epoch-*.json")) == [
            f"epoch-000{e}.json" for e in (3, 4, 5)
        ]


def test_predict_on_held_out_samples_agrees_with_the_engine(
    service: Service, trained: dict[str, Any]
) -> None:
    spec = trained["spec"]
    raw = load_builtin(DatasetSpec(name="digits"), seed=0)
    _, held = split_indices(len(raw.x), spec["fit"]["validation_split"], spec["fit"]["seed"])
    with service.client() as client:
        answer = client.post(
            f"/v1/models/{trained['id']}/predict", json={"instances": raw.x[held].tolist()}
        )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    predicted = np.asarray([int(c) for c in body["predictions"]])
    accuracy = float(np.mean(predicted == raw.y[held]))
    assert accuracy >= 0.95
    assert accuracy == pytest.approx(trained["metrics"]["val_accuracy"], abs=1e-9)
    assert len(body["probabilities"]) == len(held) and body["classes"] == [
        str(i) for i in range(10)
    ]


def test_predict_refuses_a_wrong_shape(service: Service, trained: dict[str, Any]) -> None:
    with service.client() as client:
        answer = client.post(
            f"/v1/models/{trained['id']}/predict", json={"instances": [[1.0, 2.0, 3.0]]}
        )
        assert answer.status_code == 422
        detail = answer.json()["detail"][0]
        assert detail["loc"] == ["body", "instances"]
        assert detail["msg"] == (
            "each instance must have shape [1, 8, 8] (64 values); received instances of shape [3]"
        )
        empty = client.post(f"/v1/models/{trained['id']}/predict", json={"instances": []})
        assert empty.status_code == 422 and empty.json()["detail"][0]["loc"] == [
            "body",
            "instances",
        ]


def test_predict_names_its_operation_and_refuses_another_familys(
    service: Service, trained: dict[str, Any]
) -> None:
    url = f"/v1/models/{trained['id']}/predict"
    with service.client() as client:
        answer = client.post(url, json={"operation": "predict", "instances": [[0.0] * 64]})
        assert answer.status_code == 200 and answer.json()["operation"] == "predict"
        assert client.post(url, json={"instances": [[0.0] * 64]}).json()["operation"] == "predict"
        wrong = client.post(url, json={"operation": "generate", "count": 2})
        assert wrong.status_code == 422
        assert wrong.json()["detail"][0] == {
            "loc": ["body", "operation"],
            "type": "invalid",
            # every family's refusal reads alike since supervised's predict became an operation
            "msg": "operation 'generate' is not available to the supervised family; choose one of ['predict']",
        }
        unknown = client.post(url, json={"operation": "fly", "instances": [[0.0] * 64]})
        assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == [
            "body",
            "operation",
        ]
        extra = client.post(url, json={"instances": [[0.0] * 64], "status": "x"})
        assert extra.status_code == 422 and extra.json()["detail"][0]["loc"] == ["body", "status"]
        missing = client.post(url, json={})
        assert (
            missing.status_code == 422
            and missing.json()["detail"][0]["msg"] == "give `instances` to predict"
        )


def test_a_revoked_key_is_refused_by_predict_at_once(
    service: Service, trained: dict[str, Any]
) -> None:
    """Predict remembers a (key, job) pair it has served; a revocation from another process
    (the CLI) must still be seen within `revocation_check_seconds` (0.1 s by default)."""
    key = service.fitserve("keys", "create", "--tenant", service.tenants["a"])
    url, body = f"{service.url}/v1/models/{trained['id']}/predict", {"instances": [[0.0] * 64]}
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        assert [client.post(url, json=body).status_code for _ in range(3)] == [200, 200, 200]
        service.fitserve("keys", "revoke", key[:10])
        revoked_at = time.monotonic()
        while (answer := client.post(url, json=body)).status_code == 200:
            assert time.monotonic() - revoked_at < 1.0, "a revoked key was still served after 1 s"
            time.sleep(0.01)
        assert answer.status_code == 401
        time.sleep(0.3)  # a cached yes must not come back
        assert [client.post(url, json=body).status_code for _ in range(3)] == [401, 401, 401]
    with service.client() as client:  # the tenant's other key is untouched
        assert client.post(url, json=body).status_code == 200


def test_cancel_a_running_job(service: Service) -> None:
    spec = keras_mnist_spec_on_digits() | {"name": "long"}
    spec["fit"] = spec["fit"] | {"epochs": 2000}
    with service.client() as client:
        job = client.post("/v1/jobs", json=spec).json()
        deadline = time.monotonic() + 120
        while (state := client.get(f"/v1/jobs/{job['id']}").json())["progress"]["step"] == 0:
            assert time.monotonic() < deadline, state
            time.sleep(0.1)
        asked = time.monotonic()
        cancel = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert cancel.status_code == 200 and cancel.json()["cancel_requested"] is True
        done = wait_for(client, job["id"], ("cancelled", "failed", "succeeded"), timeout=30)
        assert done["status"] == "cancelled"
        assert done["reason"].startswith("cancelled by request at epoch ")
        assert time.monotonic() - asked < 5
        again = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert (
            again.status_code == 409
            and again.json()["detail"] == f"job {job['id']} already ended: cancelled"
        )
        predict = client.post(f"/v1/models/{job['id']}/predict", json={"instances": [[0] * 64]})
        assert predict.status_code == 409


def test_uploaded_csv_trains_and_predicts_its_class_names(service: Service) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    rows = ["width,height,kind"] + [
        f"{a:.4f},{b:.4f},{'round' if a * a + b * b < 1 else 'long'}" for a, b in x
    ]
    with service.client() as client:
        up = client.post(
            "/v1/datasets",
            files={"file": ("shapes.csv", "\n".join(rows), "text/csv")},
            data={"target": "kind"},
        )
        assert up.status_code == 201, up.text
        dataset = up.json()
        assert dataset["class_names"] == ["long", "round"] and dataset["input_shape"] == [2]
        spec = {
            "name": "csv",
            "dataset": {"id": dataset["id"]},
            "model": {"preset": {"name": "mlp", "hidden_units": [32]}},
            "compile": {
                "optimizer": {"type": "adam", "learning_rate": 0.01},
                "loss": "sparse_categorical_crossentropy",
                "metrics": ["accuracy"],
            },
            "fit": {"epochs": 20, "validation_split": 0.2},
        }
        job = client.post("/v1/jobs", json=spec)
        assert job.status_code == 201, job.text
        done = wait_for(client, job.json()["id"], ("succeeded", "failed"))
        assert done["status"] == "succeeded", done["reason"]
        assert done["metrics"]["val_accuracy"] >= 0.85
        out = client.post(
            f"/v1/models/{done['id']}/predict", json={"instances": [[0.0, 0.1], [2.5, 2.5]]}
        ).json()
        assert out["predictions"] == ["round", "long"]
        listed = client.get("/v1/datasets").json()["data"]
        assert {d["name"] for d in listed if d["source"] == "builtin"} >= {
            "mnist",
            "digits",
            "iris",
        }
        uploaded = [
            d for d in listed if d["source"] == "uploaded"
        ]  # other tests upload to this tenant too
        assert dataset["id"] in [d["id"] for d in uploaded] and all(
            d["id"].startswith("ds_") for d in uploaded
        )


def test_another_tenant_gets_404_everywhere(service: Service, trained: dict[str, Any]) -> None:
    job_id = trained["id"]
    with service.client("b") as other:
        for method, path, body in [
            ("GET", f"/v1/jobs/{job_id}", None),
            ("GET", f"/v1/jobs/{job_id}/metrics", None),
            ("GET", f"/v1/jobs/{job_id}/checkpoints", None),
            ("GET", f"/v1/jobs/{job_id}/events", None),
            ("POST", f"/v1/jobs/{job_id}/cancel", None),
            ("POST", f"/v1/models/{job_id}/predict", {"instances": [[0] * 64]}),
        ]:
            answer = other.request(method, path, json=body)
            assert answer.status_code == 404, (path, answer.text)
            assert answer.json()["detail"] == f"job {job_id} not found"
        assert job_id not in [j["id"] for j in other.get("/v1/jobs").json()["data"]]
        spec = keras_mnist_spec_on_digits()
        with service.client() as mine:
            uploads = [
                d["id"]
                for d in mine.get("/v1/datasets").json()["data"]
                if d["source"] == "uploaded"
            ]
        for dataset_id in uploads:
            assert other.get(f"/v1/datasets/{dataset_id}").status_code == 404
            spec["dataset"] = {"id": dataset_id}
            refused = other.post("/v1/jobs", json=spec)
            assert refused.status_code == 422
            assert refused.json()["detail"][0]["msg"] == f"dataset {dataset_id} does not exist"


def test_requests_without_a_valid_key_get_401(service: Service) -> None:
    for headers in ({}, {"Authorization": "Bearer fs_not-a-key"}, {"Authorization": "Basic abc"}):
        answer = httpx.get(f"{service.url}/v1/jobs", headers=headers)
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{service.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{service.url}/readyz").json() == {
        "status": "ready",
        "database": "ok",
        "broker": "ok",
    }
    schema = httpx.get(f"{service.url}/openapi.json").json()
    paths = {"/v1/jobs", "/v1/jobs/{job_id}/cancel", "/v1/models/{ref}/predict", "/v1/datasets"}
    assert paths <= set(schema["paths"])
    epochs = schema["components"]["schemas"]["FitSpec"]["properties"]["epochs"]
    assert (epochs["minimum"], epochs["maximum"]) == (1, 10_000)


def _with(base: dict[str, Any], path: list[str | int], value: Any) -> dict[str, Any]:
    spec = json.loads(json.dumps(base))
    node = spec
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return spec


@pytest.mark.parametrize(
    ("path", "value", "loc", "message"),
    [
        (
            ["model", "layers", 1],
            {"type": "conv2d", "filters": 4, "kernel_size": 3},
            ["body", "model", "layers", 1],
            "layer 1 (conv2d): expected 3-D (C, H, W) input, received (64,)",
        ),
        (
            ["model", "layers", 2, "units"],
            3,
            ["body", "model", "layers", 2],
            "output has 3 units but the dataset has 10 classes",
        ),
        (
            ["model", "layers", 0],
            {"type": "transformer"},
            ["body", "model", "layers", 0],
            "Input tag 'transformer' found using 'type' does not match any of the expected tags: 'dense', 'conv1d', "
            "'conv2d', 'maxpool1d', 'maxpool2d', 'avgpool2d', 'global_avgpool', 'batchnorm', 'layernorm', 'dropout', "
            "'flatten', 'reshape', 'activation', 'embedding', 'conv2d_transpose', 'upsample2d', 'rnn', 'lstm', 'gru', "
            "'positional_encoding', 'multi_head_attention', 'transformer_encoder', 'sequence_pool'",
        ),
        (
            ["fit", "epochs"],
            0,
            ["body", "fit", "epochs"],
            "Input should be greater than or equal to 1",
        ),
        (
            ["fit", "status"],
            "succeeded",
            ["body", "fit", "status"],
            "Extra inputs are not permitted",
        ),
        (
            ["compile", "optimizer"],
            "adamx",
            ["body", "compile", "optimizer"],
            "Input tag 'adamx' found using 'type' does not match any of the expected tags: 'sgd', 'adagrad', "
            "'rmsprop', 'adam', 'adamw'",
        ),
        (
            ["dataset"],
            {"id": "ds_00000000000000000000000000000000"},
            ["body", "dataset", "id"],
            "dataset ds_00000000000000000000000000000000 does not exist",
        ),
    ],
)
def test_malformed_specs_get_422_naming_the_field(
    service: Service, path: list[str | int], value: Any, loc: list[str | int], message: str
) -> None:
    with service.client() as client:
        before = client.get("/v1/jobs").json()["count"]
        answer = client.post("/v1/jobs", json=_with(keras_mnist_spec_on_digits(), path, value))
        assert answer.status_code == 422, answer.text
        detail = answer.json()["detail"][0]
        assert detail["loc"][: len(loc)] == loc and detail["msg"] == message
        assert client.get("/v1/jobs").json()["count"] == before  # nothing written


def test_idempotency_key_returns_the_first_job(service: Service) -> None:
    spec = keras_mnist_spec_on_digits() | {"name": "idem"}
    spec["fit"] = spec["fit"] | {"epochs": 1}
    with service.client() as client:
        first = client.post("/v1/jobs", json=spec, headers={"Idempotency-Key": "k-1"})
        second = client.post("/v1/jobs", json=spec, headers={"Idempotency-Key": "k-1"})
        assert (first.status_code, second.status_code) == (201, 200)
        assert first.json()["id"] == second.json()["id"]
        other = client.post(
            "/v1/jobs", json=spec | {"name": "other"}, headers={"Idempotency-Key": "k-1"}
        )
        assert other.status_code == 409
        assert other.json()["detail"] == "this Idempotency-Key was used for a different spec"
        wait_for(client, first.json()["id"], ("succeeded", "failed"))


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("filename", "content", "status", "message"),
    [
        ("big.csv", b"a,b\n" + b"1,2\n" * (UPLOAD_LIMIT // 4 + 10), 413, None),
        ("notes.txt", b"hello", 422, "the file must be .csv or .npz, got 'notes.txt'"),
        ("bad.csv", b"a,b\n1,2\n3\n4,5\n", 422, "line 3: 1 fields, the header has 2"),
        (
            "evil.npz",
            _npz(x=np.array([{"a": 1}, {"b": 2}], dtype=object), y=np.array([0, 1])),
            422,
            "not a readable NPZ file of plain arrays: Object arrays cannot be loaded when allow_pickle=False",
        ),
    ],
)
def test_bad_uploads_are_refused(
    service: Service, filename: str, content: bytes, status: int, message: str | None
) -> None:
    uploads = service.data_dir / "artifacts" / "datasets"
    before = sorted(uploads.glob("*")) if uploads.exists() else []
    with service.client() as client:
        count = client.get("/v1/datasets").json()["count"]
        answer = client.post("/v1/datasets", files={"file": (filename, content)})
        assert answer.status_code == status, answer.text
        if message is not None:
            assert answer.json()["detail"][0]["msg"] == message
        else:
            assert (
                answer.json()["detail"]
                == f"the file is larger than the upload limit of {UPLOAD_LIMIT} bytes"
            )
        assert client.get("/v1/datasets").json()["count"] == count  # nothing written
    assert (sorted(uploads.glob("*")) if uploads.exists() else []) == before


def test_an_oversized_body_is_refused_before_it_is_read(service: Service) -> None:
    """A JSON route takes 1 MiB (JSON_MAX_BYTES); predict more, sized for PREDICT_MAX_INSTANCES."""
    limit = 2**20
    with service.client() as client:
        answer = client.post(
            "/v1/jobs",
            content=b"{" + b" " * (limit + 10) + b"}",
            headers={"content-type": "application/json"},
        )
        assert answer.status_code == 413
        assert answer.json() == {"detail": f"the request body is larger than {limit} bytes"}
        predict = client.post(
            f"/v1/models/job_{'0' * 32}/predict",
            content=b"{" + b" " * (3 * limit) + b"}",
            headers={"content-type": "application/json"},
        )
        assert predict.status_code == 404, (
            predict.text
        )  # read and answered, not refused for its size


def test_a_model_that_cannot_be_loaded_is_a_500_without_the_servers_paths(service: Service) -> None:
    raw = keras_mnist_spec_on_digits()
    raw["fit"]["epochs"] = 1
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=raw).json()["id"]
        wait_for(client, job_id, ("succeeded",))
        (
            service.data_dir / "artifacts" / "jobs" / job_id / "model.safetensors"
        ).unlink()  # never loaded yet
        answer = client.post(f"/v1/models/{job_id}/predict", json={"instances": [[0.0] * 64]})
    assert answer.status_code == 500
    assert answer.json() == {
        "detail": f"the model of job {job_id} cannot be loaded; the server's log has the details"
    }
    assert str(service.data_dir) not in answer.text
    assert f"job {job_id}: its model cannot be loaded" in service.tail(400)

"""Seq2seq end to end: a reversal model trained by the real worker, decoded over HTTP predict, on both
backends; an uploaded NPZ of token sequences; the 422s a seq2seq spec or request can get."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest

from tests.e2e.conftest import Service, wait_for
from tests.helpers import EXAMPLES

METRICS = {"loss", "token_accuracy", "sequence_accuracy", "accuracy"}
EPOCH_METRICS = (
    METRICS | {f"val_{m}" for m in METRICS} | {"lr", "epoch_seconds", "samples_per_second"}
)


def reverse_spec() -> dict[str, Any]:
    return json.loads((EXAMPLES / "reverse_seq2seq.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def reversed_job(service: Service) -> dict[str, Any]:
    with service.client() as client:
        created = client.post("/v1/jobs", json=reverse_spec())
        assert created.status_code == 201, created.text
        return wait_for(
            client, created.json()["id"], ("succeeded", "failed", "cancelled"), timeout=120
        )


def test_reversal_trains_with_a_metric_row_per_epoch(
    service: Service, reversed_job: dict[str, Any]
) -> None:
    assert reversed_job["status"] == "succeeded", reversed_job["reason"]
    assert reversed_job["reason"] == "completed 8 epochs"
    with service.client() as client:
        points = client.get(f"/v1/jobs/{reversed_job['id']}/metrics").json()["data"]
    for name in EPOCH_METRICS:
        assert [p["epoch"] for p in points if p["name"] == name] == list(range(1, 9)), name
    last = {p["name"]: p["value"] for p in points if p["epoch"] == 8}
    assert last["val_token_accuracy"] >= 0.9  # greedy decoding of the validation split
    first = next(p["value"] for p in points if p["name"] == "loss" and p["epoch"] == 1)
    assert last["loss"] < first / 4


def test_predict_reverses_sequences_it_never_saw(
    service: Service, reversed_job: dict[str, Any]
) -> None:
    fresh = np.random.default_rng(2024).integers(0, 10, (100, 8))
    with service.client() as client:
        answer = client.post(
            f"/v1/models/{reversed_job['id']}/predict", json={"instances": fresh.tolist()}
        )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["operation"] == "predict"  # the family's default
    decoded = np.asarray(body["predictions"])
    assert decoded.shape == (100, 8)
    assert np.mean(decoded == fresh[:, ::-1]) >= 0.9


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        (
            {"instances": [[1, 2, 3]]},
            ["body", "instances"],
            "each instance must be a list of 8 token ids, integers in 0..9; instance 0 has 3 values",
        ),
        (
            {"instances": [[0] * 8, [3] * 7 + [12]]},
            ["body", "instances"],
            "each instance must be a list of 8 token ids, integers in 0..9; instance 1 has 12",
        ),
        (
            {"operation": "generate", "count": 2},
            ["body", "operation"],
            "operation 'generate' is not available to the seq2seq family; choose one of ['predict']",
        ),
    ],
)
def test_predict_refuses_what_it_cannot_decode(
    service: Service,
    reversed_job: dict[str, Any],
    body: dict[str, Any],
    loc: list[str],
    message: str,
) -> None:
    with service.client() as client:
        answer = client.post(f"/v1/models/{reversed_job['id']}/predict", json=body)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"][0]
    assert detail["loc"] == loc and detail["msg"] == message


@pytest.mark.parametrize(
    ("section", "replacement", "loc", "start"),
    [
        (
            "dataset",
            {"name": "digits"},
            ["body", "dataset", "name"],
            "seq2seq maps token sequences to token sequences; 'digits' is not such a dataset",
        ),
        (
            "compile",
            {"loss": "mse"},
            ["body", "compile", "loss"],
            "seq2seq is trained with sparse_categorical_crossentropy",
        ),
    ],
)
def test_a_spec_seq2seq_cannot_train_is_refused_before_queuing(
    service: Service, section: str, replacement: dict[str, Any], loc: list[str], start: str
) -> None:
    spec = reverse_spec()
    spec[section] = replacement
    with service.client() as client:
        before = client.get("/v1/jobs").json()["count"]
        answer = client.post("/v1/jobs", json=spec)
        assert answer.status_code == 422, answer.text
        detail = answer.json()["detail"][0]
        assert detail["loc"] == loc and detail["msg"].startswith(start)
        assert client.get("/v1/jobs").json()["count"] == before


def test_an_uploaded_npz_of_token_sequences_trains(service: Service) -> None:
    """x: 6 ids in 0..11; y: the first 3, taken mod 5 (another length, another vocabulary)."""
    x = np.random.default_rng(0).integers(0, 12, (400, 6))
    buf = io.BytesIO()
    np.savez(buf, x=x, y=x[:, :3] % 5)
    spec = reverse_spec() | {"name": "pairs", "seq2seq": {"units": 32, "input_vocabulary": 12}}
    spec["fit"] = {**spec["fit"], "epochs": 2}
    with service.client() as client:
        uploaded = client.post("/v1/datasets", files={"file": ("pairs.npz", buf.getvalue())})
        assert uploaded.status_code == 201, uploaded.text
        described = uploaded.json()
        assert (described["task"], described["input_shape"], described["num_classes"]) == (
            "classification",
            [6],
            5,
        )
        created = client.post("/v1/jobs", json=spec | {"dataset": {"id": described["id"]}})
        assert created.status_code == 201, created.text
        job = wait_for(
            client, created.json()["id"], ("succeeded", "failed", "cancelled"), timeout=120
        )
        assert job["status"] == "succeeded", job["reason"]
        answer = client.post(
            f"/v1/models/{job['id']}/predict", json={"instances": [[11] * 6, [0] * 6]}
        )
    assert answer.status_code == 200, answer.text
    decoded = answer.json()["predictions"]
    assert [len(row) for row in decoded] == [3, 3] and all(
        0 <= t < 5 for row in decoded for t in row
    )

"""Recurrent models through the real API and worker: LSTM and GRU classifiers on a generated
sequence task, and an LSTM forecaster against the last-value baseline, judged on predictions
served over HTTP in raw units."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from core.datasets import load_builtin
from core.preprocessing import split_indices
from core.spec import DatasetSpec
from tests.e2e.conftest import Service, wait_for

TERMINAL = ("succeeded", "failed", "cancelled")


def _spec(
    dataset: dict[str, Any],
    layers: list[dict[str, Any]],
    loss: str,
    metrics: list[str],
    epochs: int,
) -> dict[str, Any]:
    return {
        "name": "sequence",
        "dataset": dataset,
        "model": {"layers": layers},
        "compile": {
            "optimizer": {"type": "adam", "learning_rate": 0.005},
            "loss": loss,
            "metrics": metrics,
        },
        "fit": {"epochs": epochs, "batch_size": 64, "validation_split": 0.2, "seed": 0},
    }


def _train(service: Service, spec: dict[str, Any]) -> dict[str, Any]:
    with service.client() as client:
        created = client.post("/v1/jobs", json=spec)
        assert created.status_code == 201, created.text
        job = wait_for(client, created.json()["id"], TERMINAL)
    assert job["status"] == "succeeded", job["reason"]
    return job


def _held_out(spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The validation rows the worker held out, in raw units (the same generator seed and split)."""
    raw = load_builtin(DatasetSpec(**spec["dataset"]), seed=spec["fit"]["seed"])
    _, held = split_indices(len(raw.x), spec["fit"]["validation_split"], spec["fit"]["seed"])
    return raw.x[held], raw.y[held]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_recurrent_classifier_learns_sequence_classes(service: Service, cell: str) -> None:
    spec = _spec(
        {"name": "sequence_classes"},
        [{"type": cell, "units": 32}, {"type": "dense", "units": 4, "activation": "softmax"}],
        "sparse_categorical_crossentropy",
        ["accuracy"],
        epochs=8,
    )
    job = _train(service, spec)
    assert job["metrics"]["val_accuracy"] >= 0.95
    x, y = _held_out(spec)
    with service.client() as client:
        answer = client.post(f"/v1/models/{job['id']}/predict", json={"instances": x.tolist()})
    assert answer.status_code == 200, answer.text
    predicted = np.asarray(answer.json()["class_ids"])
    assert float(np.mean(predicted == y)) == pytest.approx(job["metrics"]["val_accuracy"], abs=1e-9)


def test_an_lstm_forecaster_halves_the_last_value_baseline(service: Service) -> None:
    spec = _spec(
        {"name": "sequence_sine"},
        [{"type": "lstm", "units": 32}, {"type": "dense", "units": 1}],
        "mse",
        ["mse"],
        epochs=10,
    )
    job = _train(service, spec)
    x, y = _held_out(spec)
    with service.client() as client:
        answer = client.post(f"/v1/models/{job['id']}/predict", json={"instances": x.tolist()})
    assert answer.status_code == 200, answer.text
    forecast = np.asarray(answer.json()["predictions"])
    model_mse = float(np.mean((forecast - y[:, 0]) ** 2))
    baseline_mse = float(np.mean((x[:, -1, 0] - y[:, 0]) ** 2))  # repeat the last value seen
    assert model_mse * 2 <= baseline_mse, (model_mse, baseline_mse)
    assert model_mse == pytest.approx(
        job["metrics"]["val_mse"], rel=1e-3
    )  # the engine's figure, in raw units

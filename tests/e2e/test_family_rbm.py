"""The rbm and dbn families end to end: the example specs over HTTP, a real worker, the metric
series from /metrics, every predict operation, a wrong operation and a refused spec (422)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from core.datasets import load_builtin
from core.preprocessing import split_indices
from core.spec import DatasetSpec
from tests.e2e.conftest import Service
from tests.e2e.http import example, predict, refused, train_and_read

TIMING = {"lr", "epoch_seconds", "samples_per_second"}


def held_out(raw: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The validation split's digits in raw units (0-16) and their labels, as the worker split them."""
    digits = load_builtin(DatasetSpec(name="digits"), seed=0)
    _, held = split_indices(len(digits.x), raw["fit"]["validation_split"], raw["fit"]["seed"])
    return digits.x[held], digits.y[held]


def train_over_http(
    service: Service, raw: dict[str, Any]
) -> tuple[str, dict[str, dict[int, float]]]:
    """Submit, wait for success; returns the job id and each metric's {epoch: value}."""
    job_id, points = train_and_read(service, raw)
    series: dict[str, dict[int, float]] = {}
    for p in points:
        series.setdefault(p["name"], {})[p["epoch"]] = p["value"]
    return job_id, series


def test_rbm_over_http(service: Service) -> None:
    raw = example("digits_rbm")
    raw["fit"]["epochs"] = 5
    job_id, series = train_over_http(service, raw)
    assert (
        set(series)
        == {"loss", "free_energy", "val_loss", "val_free_energy", "free_energy_gap"} | TIMING
    )
    losses = [series["loss"][epoch] for epoch in range(1, 6)]
    assert all(later < earlier for earlier, later in itertools.pairwise(losses)), losses
    x, _ = held_out(raw)
    hidden = np.asarray(predict(service, job_id, {"instances": x[:5].tolist()})["predictions"])
    assert hidden.shape == (5, 128) and hidden.min() >= 0.0 and hidden.max() <= 1.0
    out = predict(service, job_id, {"operation": "reconstruct", "instances": x.tolist()})
    reconstructed = np.asarray(out["predictions"])
    assert out["operation"] == "reconstruct" and reconstructed.shape == x.shape
    # The raw instances were binarised at 8 as the training data was: the error is val_loss's.
    assert np.mean((reconstructed - (x > 8)) ** 2) == pytest.approx(series["val_loss"][5], rel=1e-4)
    wrong = predict(
        service, job_id, {"operation": "predict", "instances": x[:1].tolist()}, status=422
    )
    assert wrong["detail"][0]["loc"] == ["body", "operation"]
    assert "choose one of ['transform', 'reconstruct']" in wrong["detail"][0]["msg"]
    bad = refused(
        service, {"family": "rbm", "dataset": {"name": "iris"}, "rbm": {"hidden_units": 8}}
    )
    assert bad["loc"] == ["body", "rbm", "visible"] and "dataset.binarize" in bad["msg"]


def test_dbn_over_http(service: Service) -> None:
    raw = example("digits_dbn")
    job_id, series = train_over_http(service, raw)
    epochs, pretraining = (
        raw["fit"]["epochs"],
        raw["dbn"]["pretrain_epochs"] * len(raw["dbn"]["hidden_units"]),
    )
    assert (
        set(series) == {"loss", "accuracy", "val_loss", "val_accuracy", "phase", "layer"} | TIMING
    )
    assert series["phase"] == {e: float(e > pretraining) for e in range(1, epochs + 1)}
    assert series["layer"] == {1: 1.0, 2: 1.0, 3: 1.0, 4: 2.0, 5: 2.0, 6: 2.0}
    assert sorted(series["val_accuracy"]) == list(range(pretraining + 1, epochs + 1))
    assert series["val_accuracy"][epochs] >= 0.93
    x, y = held_out(raw)
    out = predict(service, job_id, {"instances": x.tolist()})
    assert out["operation"] == "predict" and out["classes"] == [str(i) for i in range(10)]
    assert np.asarray(out["probabilities"]).shape == (len(x), 10)
    assert [int(c) for c in out["predictions"]] == out["class_ids"]
    assert float(np.mean(np.asarray(out["class_ids"]) == y)) == pytest.approx(
        series["val_accuracy"][epochs], abs=1e-9
    )
    features = predict(service, job_id, {"operation": "transform", "instances": x[:4].tolist()})[
        "predictions"
    ]
    assert np.asarray(features).shape == (4, 64)
    wrong = predict(
        service, job_id, {"operation": "reconstruct", "instances": x[:1].tolist()}, status=422
    )
    assert wrong["detail"][0]["loc"] == ["body", "operation"]
    short = raw | {"fit": raw["fit"] | {"epochs": pretraining}}
    bad = refused(service, short)
    assert (
        bad["loc"] == ["body", "fit", "epochs"] and f"give at least {pretraining + 1}" in bad["msg"]
    )

"""Predict from a checkpoint: raw units in, the engine's own answers out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.datasets import load_builtin
from core.spec import DatasetSpec, JobSpec
from models.inference import PredictError, Predictor, prepare_instances
from tests.helpers import digits_mlp
from worker.datasource import load_train_data
from worker.training.engine import train


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = digits_mlp(epochs=8)
    result = train(spec, load_train_data(spec), tmp_path_factory.mktemp("digits"))
    assert result.history[-1]["val_accuracy"] > 0.9
    assert result.model_path is not None
    return result.model_path


def test_predict_on_raw_pixels_matches_the_network(digits_model: Path) -> None:
    predictor = Predictor.load(digits_model)
    raw = load_builtin(DatasetSpec(name="digits"), seed=0)
    out = predictor.predict(raw.x[:50].tolist())
    with torch.no_grad():
        logits = predictor.model.module.logits(torch.from_numpy(raw.x[:50] / 16.0).float())
    assert out["class_ids"] == logits.argmax(1).tolist()
    probs = np.asarray(out["probabilities"])
    assert probs.shape == (50, 10) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert out["classes"] == [str(i) for i in range(10)]
    assert np.mean(np.asarray(out["class_ids"]) == raw.y[:50]) > 0.9


def test_predict_accepts_flat_instances(digits_model: Path) -> None:
    predictor = Predictor.load(digits_model)
    raw = load_builtin(DatasetSpec(name="digits"), seed=0)
    assert predictor.predict(raw.x[:3].reshape(3, 64).tolist()) == predictor.predict(
        raw.x[:3].tolist()
    )


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        (
            [[1.0, 2.0, 3.0]],
            r"each instance must have shape \[1, 8, 8\] \(64 values\); received instances of shape \[3\]",
        ),
        ([], "give a non-empty list of instances"),
        ([[1, 2], [3]], "instances must be numbers in a regular nested list"),
        ([[float("nan")] * 64], "instances must hold finite numbers"),
    ],
)
def test_predict_refuses_wrong_shapes(digits_model: Path, instances: object, message: str) -> None:
    with pytest.raises(PredictError, match=message):
        Predictor.load(digits_model).predict(instances)


def test_regression_predictions_are_in_raw_units(tmp_path: Path) -> None:
    spec = JobSpec.model_validate(
        {
            "dataset": {"name": "sine", "n_samples": 400},
            "model": {"preset": {"name": "mlp", "hidden_units": [32], "activation": "tanh"}},
            "compile": {
                "optimizer": {"type": "adam", "learning_rate": 0.01},
                "loss": "mse",
                "metrics": ["mae"],
            },
            "fit": {"epochs": 30, "batch_size": 32},
        }
    )
    result = train(spec, load_train_data(spec), tmp_path)
    assert result.model_path is not None
    values = Predictor.load(result.model_path).predict([[-1.5], [0.0], [1.5]])["predictions"]
    assert np.allclose(values, np.sin([-1.5, 0.0, 1.5]), atol=0.2)


def test_binary_classifier_gives_two_probabilities(tmp_path: Path) -> None:
    spec = JobSpec.model_validate(
        {
            "dataset": {"name": "moons", "n_samples": 300},
            "model": {
                "layers": [
                    {"type": "dense", "units": 16, "activation": "relu"},
                    {"type": "dense", "units": 1, "activation": "sigmoid"},
                ]
            },
            "compile": {
                "optimizer": {"type": "adam", "learning_rate": 0.01},
                "loss": "binary_crossentropy",
            },
            "fit": {"epochs": 5},
        }
    )
    result = train(spec, load_train_data(spec), tmp_path)
    assert result.model_path is not None
    out = Predictor.load(result.model_path).predict([[0.0, 0.5], [1.0, -0.5]])
    assert np.asarray(out["probabilities"]).shape == (2, 2) and out["classes"] == ["0", "1"]


def test_numbers_too_large_for_a_float_are_a_predict_error_not_a_crash() -> None:
    with pytest.raises(PredictError, match="instances must be numbers in a regular nested list"):
        prepare_instances([[10**400, 0.0]], (2,), {}, False, torch.device("cpu"))

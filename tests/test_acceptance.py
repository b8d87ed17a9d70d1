"""The issue's acceptance figures, trained for real on CPU (a few minutes in all)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.inference import Predictor
from tests.helpers import example
from worker.datasource import load_train_data
from worker.training.engine import train

pytestmark = pytest.mark.slow


@pytest.mark.timeout(
    1800
)  # 9,375 steps: 32 s on an idle 2-core machine, minutes when the cores are shared
def test_keras_mnist_example_reaches_test_accuracy(tmp_path: Path) -> None:
    spec = example("mnist_mlp")
    result = train(spec, load_train_data(spec), tmp_path)
    assert result.status == "completed" and result.epochs_done == 5
    assert result.test_metrics["test_accuracy"] >= 0.975


@pytest.mark.parametrize("name", ["digits_mlp", "digits_shallow_vggnet"])
def test_digits_reaches_validation_accuracy(tmp_path: Path, name: str) -> None:
    spec = example(name)
    result = train(spec, load_train_data(spec), tmp_path)
    assert result.history[-1]["val_accuracy"] >= 0.95


def test_breast_cancer_sigmoid_binary_crossentropy(tmp_path: Path) -> None:
    spec = example("breast_cancer_mlp")
    result = train(spec, load_train_data(spec), tmp_path)
    best = result.history[(result.best_epoch or len(result.history)) - 1]
    assert best["val_accuracy"] >= 0.95


def test_diabetes_mlp_beats_predicting_the_mean(tmp_path: Path) -> None:
    spec = example("diabetes_mlp")
    data = load_train_data(spec)
    result = train(spec, data, tmp_path)
    assert result.model_path is not None
    predictor = Predictor.load(result.model_path)
    # Validation rows in raw clinical units, as a user would send them.
    from core.datasets import load_dataset
    from core.preprocessing import split_indices

    raw = load_dataset(spec.dataset, spec.fit.seed)
    _, held = split_indices(len(raw.x), spec.validation_split, spec.fit.seed)
    truth = raw.y[held, 0]
    predicted = np.asarray(predictor.predict(raw.x[held].tolist())["predictions"])
    r2 = 1 - np.sum((truth - predicted) ** 2) / np.sum((truth - truth.mean()) ** 2)
    assert r2 > 0.3

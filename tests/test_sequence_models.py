"""Sequence models in-process: the generated sequence sets, recurrent and attention classifiers and a
forecaster trained by the engine, the dry-run's layer-indexed shape errors, and token ids from a CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.datasets import DatasetError, builtin_info, load_builtin
from core.preprocessing import apply_affine, invert_affine
from core.spec import DataInfo, DatasetSpec, JobSpec
from models.errors import SpecError
from models.inference import Predictor
from models.validation import dry_run
from worker.datasource import load_train_data
from worker.training.engine import train

SPARSE = "sparse_categorical_crossentropy"


def job(
    dataset: dict[str, Any],
    layers: list[dict[str, Any]],
    loss: str = SPARSE,
    metrics: tuple[str, ...] = ("accuracy",),
    epochs: int = 8,
    lr: float = 0.005,
) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "sequence",
            "dataset": dataset,
            "model": {"layers": layers},
            "compile": {
                "optimizer": {"type": "adam", "learning_rate": lr},
                "loss": loss,
                "metrics": list(metrics),
            },
            "fit": {"epochs": epochs, "batch_size": 64, "validation_split": 0.2, "seed": 0},
        }
    )


# -- the generated sets ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shape", "task", "classes"),
    [
        ("sequence_sine", (20, 1), "regression", None),
        ("sequence_classes", (32, 2), "classification", 4),
        ("sequence_tokens", (32,), "classification", 2),
    ],
)
def test_sequence_set_has_its_shape_and_is_deterministic_by_seed(name, shape, task, classes):
    a = load_builtin(DatasetSpec(name=name, n_samples=200), seed=1)
    b = load_builtin(DatasetSpec(name=name, n_samples=200), seed=1)
    c = load_builtin(DatasetSpec(name=name, n_samples=200), seed=2)
    assert (
        a.input_shape == shape and a.task == task and a.num_classes == classes and len(a.x) == 200
    )
    assert builtin_info(DatasetSpec(name=name)).input_shape == shape
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y) and not np.array_equal(a.x, c.x)
    assert np.all(np.isfinite(a.x))


def test_sequence_tokens_class_is_the_clear_majority_marker():
    ds = load_builtin(DatasetSpec(name="sequence_tokens", n_samples=500, classes=5), seed=0)
    tokens = ds.x.astype(np.int64)
    assert np.array_equal(ds.x, tokens) and tokens.min() >= 1 and tokens.max() <= 31
    counts = np.stack([(tokens == marker).sum(axis=1) for marker in range(1, 6)], axis=1)
    ranked = np.sort(counts, axis=1)
    assert np.array_equal(counts.argmax(axis=1), ds.y) and np.all(
        ranked[:, -1] - ranked[:, -2] >= 2
    )
    assert np.bincount(ds.y).tolist() == [100] * 5


def test_sequence_sets_refuse_options_they_cannot_honour():
    with pytest.raises(
        DatasetError, match=r"dataset\.classes: sequence_classes has at most 8 classes, not 9"
    ):
        load_builtin(DatasetSpec(name="sequence_classes", classes=9), seed=0)
    with pytest.raises(DatasetError, match=r"dataset\.noise does not apply to sequence_tokens"):
        load_builtin(DatasetSpec(name="sequence_tokens", noise=0.1), seed=0)


# -- training -------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrent_classifier_learns_sequence_classes(cell: str, tmp_path: Path) -> None:
    spec = job(
        {"name": "sequence_classes"},
        [{"type": cell, "units": 32}, {"type": "dense", "units": 4, "activation": "softmax"}],
    )
    result = train(spec, load_train_data(spec), tmp_path)
    assert result.status == "completed"
    assert result.history[-1]["val_accuracy"] >= 0.95, result.history


def test_lstm_forecaster_halves_the_last_value_baseline(tmp_path: Path) -> None:
    spec = job(
        {"name": "sequence_sine"},
        [{"type": "lstm", "units": 32}, {"type": "dense", "units": 1}],
        loss="mse",
        metrics=("mse",),
        epochs=10,
    )
    data = load_train_data(spec)
    assert data.x_val is not None and data.y_val is not None
    # The loss is in standardised target units: map the raw last input value into them.
    last = invert_affine(data.x_val.numpy(), data.preprocessing["features"])[:, -1, :]
    baseline = float(
        np.mean((apply_affine(last, data.preprocessing["target"]) - data.y_val.numpy()) ** 2)
    )
    assert (
        baseline < 0.3
    )  # the last value is a fair forecast (the targets' variance is 1): a real bar to beat
    result = train(spec, data, tmp_path)
    assert result.history[-1]["val_loss"] * 2 <= baseline, (result.history[-1], baseline)


def test_transformer_classifier_learns_token_majority(tmp_path: Path) -> None:
    spec = job(
        {"name": "sequence_tokens", "classes": 4},
        [
            {"type": "embedding", "input_dim": 32, "output_dim": 32},
            {"type": "positional_encoding"},
            {"type": "transformer_encoder", "num_heads": 4, "ff_dim": 64},
            {"type": "sequence_pool", "mode": "mean"},
            {"type": "dense", "units": 4, "activation": "softmax"},
        ],
    )
    data = load_train_data(spec)
    assert (
        str(data.x_train.dtype) == "torch.int64"
    )  # an embedding first: token ids, never standardised
    result = train(spec, data, tmp_path)
    assert result.history[-1]["val_accuracy"] >= 0.9, result.history


def test_uploaded_csv_of_token_columns_trains_and_predicts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 10, (400, 8))
    label = (tokens == 7).any(axis=1).astype(int)
    rows = ["t0,t1,t2,t3,t4,t5,t6,t7,label"] + [
        ",".join(map(str, [*t, c])) for t, c in zip(tokens, label, strict=True)
    ]
    (tmp_path / "tokens.csv").write_text("\n".join(rows) + "\n")
    spec = job(
        {"id": "tokens"},
        [
            {"type": "embedding", "input_dim": 10, "output_dim": 8},
            {"type": "sequence_pool", "mode": "max"},
            {"type": "dense", "units": 2, "activation": "softmax"},
        ],
        epochs=15,
        lr=0.02,
    )
    result = train(
        spec, load_train_data(spec, lambda _id: tmp_path / "tokens.csv"), tmp_path / "run"
    )
    assert result.history[-1]["val_accuracy"] >= 0.9, result.history
    assert result.model_path is not None
    predicted = Predictor.load(result.model_path).predict(
        [[7, 0, 0, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 8, 9]]
    )
    assert predicted["predictions"] == ["1", "0"]


# -- the dry-run ----------------------------------------------------------------------------

CLASSES_INFO = DataInfo(input_shape=(32, 2), task="classification", num_classes=4)


def test_dry_run_counts_recurrent_parameters():
    spec = job(
        {"name": "sequence_classes"},
        [{"type": "lstm", "units": 8}, {"type": "dense", "units": 4, "activation": "softmax"}],
    )
    report = dry_run(spec, CLASSES_INFO)
    assert [layer["output_shape"] for layer in report.layers] == [[8], [4]]
    assert (
        report.parameters == 4 * (8 * 2 + 8 * 8 + 8 + 8) + 8 * 4 + 4
    )  # torch keeps two bias vectors


@pytest.mark.parametrize(
    ("layers", "index", "message"),
    [
        (
            [{"type": "flatten"}, {"type": "lstm", "units": 8}],
            1,
            "layer 1 (lstm): expected 2-D (L, F) sequence input, received (64,)",
        ),
        (
            [
                {"type": "dense", "units": 10},
                {"type": "transformer_encoder", "num_heads": 4, "ff_dim": 8},
            ],
            1,
            "layer 1 (transformer_encoder): the model dimension 10 (the input's last axis) does not divide by "
            "num_heads 4",
        ),
        (
            [{"type": "gru", "units": 8}, {"type": "sequence_pool"}],
            1,
            "layer 1 (sequence_pool): expected 2-D (L, D) sequence input, received (8,)",
        ),
    ],
)
def test_dry_run_names_the_sequence_layer_at_fault(layers, index, message):
    spec = job(
        {"name": "sequence_classes"},
        [*layers, {"type": "dense", "units": 4, "activation": "softmax"}],
    )
    with pytest.raises(SpecError) as caught:
        dry_run(spec, CLASSES_INFO)
    assert caught.value.loc == ("model", "layers", index)
    assert str(caught.value) == message

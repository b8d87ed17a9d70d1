"""The seq2seq family in-process: token datasets, the dry run's refusals, training with teacher forcing,
greedy decoding in evaluation and predict, and NPZ uploads of token sequences."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.datasets import DatasetError, builtin_info, load_builtin, parse_npz
from core.preprocessing import prepare, split_indices
from core.spec import DataInfo, DatasetSpec, JobSpec
from models.errors import PredictError, SpecError
from models.families import OperationRequest
from models.inference import Predictor
from models.validation import dry_run
from tests.helpers import example
from worker.datasource import load_train_data, train_data
from worker.training.engine import TrainingFailed, TrainResult, train

EPOCH_METRICS = {"loss", "token_accuracy", "sequence_accuracy", "accuracy"}


def seq2seq_spec(dataset: dict[str, Any] | None = None, epochs: int = 2, **section: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "s2s",
            "family": "seq2seq",
            "dataset": dataset or {"name": "sequence_reverse"},
            "seq2seq": section,
            "compile": {
                "optimizer": {"type": "adam", "learning_rate": 0.01},
                "loss": "sparse_categorical_crossentropy",
            },
            "fit": {
                "epochs": epochs,
                "batch_size": 64,
                "validation_split": 0.2,
                "lr_schedule": {"type": "cosine"},
            },
        }
    )


def with_compile(spec: JobSpec, **compile_: Any) -> JobSpec:
    return spec.model_copy(update={"compile": spec.compiled.model_copy(update=compile_)})


@pytest.fixture(scope="module")
def reversed_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[JobSpec, TrainResult]:
    spec = example("reverse_seq2seq")
    return spec, train(spec, load_train_data(spec), tmp_path_factory.mktemp("reverse"))


def test_token_pair_datasets_reverse_and_copy() -> None:
    rev = load_builtin(DatasetSpec(name="sequence_reverse", n_samples=50), seed=3)
    assert rev.x.shape == (50, 8) and rev.y.shape == (50, 8) and rev.y.dtype == np.int64
    assert np.array_equal(rev.y, rev.x[:, ::-1].astype(np.int64))
    copy = load_builtin(DatasetSpec(name="sequence_copy", n_samples=20, classes=5), seed=3)
    assert np.array_equal(copy.y, copy.x.astype(np.int64)) and copy.x.max() == 4
    assert copy.info() == DataInfo(
        input_shape=(8,), task="classification", num_classes=5, target_dim=8
    )
    # token ids are neither standardised nor one-hot encoded: x as int64 ids, y untouched
    prepared = prepare(
        rev, validation_split=0.2, test_split=0.0, seed=0, standardize=None, tokens=True
    )
    assert prepared.x_train.dtype == np.int64 and prepared.preprocessing == {
        "features": None,
        "target": None,
    }
    assert prepared.y_train.shape == (40, 8) and np.array_equal(
        prepared.y_train, prepared.x_train[:, ::-1]
    )
    with pytest.raises(DatasetError, match=r"dataset\.noise does not apply to sequence_copy"):
        builtin_info(DatasetSpec(name="sequence_copy", noise=0.1))
    with pytest.raises(DatasetError, match="sequence_reverse has at most 50 classes, not 60"):
        builtin_info(DatasetSpec(name="sequence_reverse", classes=60))


@pytest.mark.parametrize(
    ("spec", "loc", "message"),
    [
        (seq2seq_spec({"name": "digits"}), ("dataset", "name"), "'digits' is not such a dataset"),
        (
            with_compile(seq2seq_spec(), loss="categorical_crossentropy"),
            ("compile", "loss"),
            "trained with sparse_categorical_crossentropy",
        ),
        (
            with_compile(seq2seq_spec(), metrics=["accuracy", "mae"]),
            ("compile", "metrics"),
            "\\['mae'\\] do not apply",
        ),
        (
            seq2seq_spec({"name": "sequence_copy", "standardize": True}),
            ("dataset", "standardize"),
            "never standardised",
        ),
    ],
)
def test_dry_run_refuses_what_seq2seq_cannot_train(
    spec: JobSpec, loc: tuple[str, ...], message: str
) -> None:
    with pytest.raises(SpecError, match=message) as caught:
        dry_run(spec, builtin_info(spec.dataset))
    assert caught.value.loc == loc


@pytest.mark.parametrize(
    ("info", "message"),
    [
        (DataInfo(input_shape=(6,), task="regression", target_dim=6), "regression targets"),
        (
            DataInfo(input_shape=(1, 8, 8), task="classification", num_classes=10, target_dim=1),
            "are \\[1, 8, 8\\]",
        ),
        (
            DataInfo(input_shape=(6,), task="classification", num_classes=4),
            "one class id per sample",
        ),
    ],
)
def test_dry_run_refuses_an_upload_that_is_not_token_sequences(
    info: DataInfo, message: str
) -> None:
    spec = seq2seq_spec({"id": "ds_upload"})
    with pytest.raises(SpecError, match=message) as caught:
        dry_run(spec, info)
    assert caught.value.loc == ("dataset", "id")


def test_dry_run_reports_each_part() -> None:
    spec = seq2seq_spec(cell="gru", bidirectional_encoder=True, num_layers=2, input_vocabulary=12)
    report = dry_run(spec, builtin_info(spec.dataset))
    parts = [layer["type"] for layer in report.layers]
    assert parts == [
        "encoder.embedding",
        "encoder.gru",
        "encoder.bridge",
        "decoder.embedding",
        "decoder.gru",
        "decoder.attention",
        "decoder.dense",
    ]
    assert report.output_shape == (8, 10) and report.layers[0]["parameters"] == 12 * 32
    assert sum(layer["parameters"] for layer in report.layers) == report.parameters


def test_reverse_learns_with_attention_and_predict_decodes_greedily(
    reversed_model: tuple[JobSpec, TrainResult],
) -> None:
    spec, result = reversed_model
    assert result.status == "completed" and result.model_path is not None
    assert EPOCH_METRICS | {f"val_{m}" for m in EPOCH_METRICS} <= set(result.history[-1])
    last = result.history[-1]
    assert last["val_token_accuracy"] >= 0.9 and last["accuracy"] == last["token_accuracy"]
    assert result.history[-1]["loss"] < result.history[0]["loss"] / 4
    # The validation rows sent to predict score what the engine reported (greedy decoding both ways).
    raw = load_builtin(spec.dataset, spec.fit.seed)
    _, held = split_indices(len(raw.x), spec.validation_split, spec.fit.seed)
    predictor = Predictor.load(result.model_path)
    assert isinstance(predictor, Predictor)
    out = predictor.run(None, OperationRequest(instances=raw.x[held].astype(int).tolist()))
    decoded = np.asarray(out["predictions"])
    assert decoded.shape == (len(held), 8)
    assert np.mean(decoded == raw.y[held]) == pytest.approx(last["val_token_accuracy"], abs=1e-6)
    fresh = np.random.default_rng(123).integers(
        0, 10, (200, 8)
    )  # sequences the model has never seen
    answer = predictor.run("predict", OperationRequest(instances=fresh.tolist()))
    assert np.mean(np.asarray(answer["predictions"]) == fresh[:, ::-1]) >= 0.9


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ([[1, 2, 3]], "a list of 8 token ids, integers in 0..9; instance 0 has 3 values"),
        ([[0] * 8, [0] * 7 + [10]], "instance 1 has 10"),
        ([[0] * 7 + [1.5]], "instance 0 has 1.5"),
        ([[0] * 7 + [True]], "instance 0 has True"),
        ([5], "instance 0 has int"),
    ],
)
def test_predict_names_the_expected_length_and_range(
    reversed_model: tuple[JobSpec, TrainResult], instances: list[Any], message: str
) -> None:
    path = reversed_model[1].model_path
    assert path is not None
    with pytest.raises(PredictError, match=message.replace(".", "\\.")) as caught:
        Predictor.load(path).run("predict", OperationRequest(instances=instances))
    assert caught.value.field == "instances"
    with pytest.raises(
        PredictError, match="'generate' is not available to the seq2seq family"
    ) as wrong:
        Predictor.load(path).run("generate", OperationRequest(count=2))
    assert wrong.value.field == "operation"


def test_copy_with_a_gru_learns_and_attention_off_trains(tmp_path: Path) -> None:
    spec = seq2seq_spec({"name": "sequence_copy", "n_samples": 2000}, epochs=6, cell="gru")
    copied = train(spec, load_train_data(spec), tmp_path / "copy").history
    assert copied[-1]["val_token_accuracy"] >= 0.9
    plain = seq2seq_spec({"name": "sequence_copy", "n_samples": 600}, attention=False, num_layers=2)
    history = train(plain, load_train_data(plain), tmp_path / "plain").history
    assert all(math.isfinite(h[k]) for h in history for k in ("loss", "val_loss"))
    assert history[-1]["loss"] < history[0]["loss"]


def _npz(x: np.ndarray, y: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    return buf.getvalue()


def test_npz_token_sequences_of_other_lengths_and_vocabularies(tmp_path: Path) -> None:
    """An upload: 6 source ids in 0..11 -> the first 3, shifted into a target vocabulary of 0..4."""
    x = np.random.default_rng(0).integers(0, 12, (300, 6))
    ds = parse_npz(_npz(x=x, y=x[:, :3] % 5), task=None, name="pairs")
    assert ds.task == "classification" and ds.num_classes == 5 and ds.info().target_dim == 3
    assert parse_npz(_npz(x=x, y=x[:, :3] * 0.5), task=None, name="floats").task == "regression"
    spec = seq2seq_spec({"id": "ds_pairs"})
    with pytest.raises(
        TrainingFailed, match=r"x holds token ids 0\.\.11, outside 0\.\.4 \(set seq2seq.input_vocab"
    ):
        train(spec, train_data(spec, ds), tmp_path / "small")
    spec = seq2seq_spec({"id": "ds_pairs"}, input_vocabulary=12, bidirectional_encoder=True)
    assert dry_run(spec, ds.info()).output_shape == (3, 5)
    result = train(spec, train_data(spec, ds), tmp_path / "pairs")
    assert result.model_path is not None and math.isfinite(result.history[-1]["val_loss"])
    decoded = Predictor.load(result.model_path).run(None, OperationRequest(instances=[[11] * 6]))
    assert len(decoded["predictions"][0]) == 3 and all(
        0 <= t < 5 for t in decoded["predictions"][0]
    )

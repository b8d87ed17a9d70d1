"""The rbm and dbn families in-process: CD training, the binarised dataset option, the checks
before queuing and at train start, predict from the checkpoint, and exact resume mid-pretraining."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from core.datasets import load_builtin
from core.preprocessing import prepare, split_indices
from core.spec import DataInfo, DatasetSpec, JobSpec
from models.checkpoint import split_prefix
from models.errors import SpecError
from models.families import OperationRequest
from models.families.rbm import RBM
from models.inference import Predictor
from models.validation import dry_run
from tests.helpers import EXAMPLES
from worker.datasource import load_train_data
from worker.training.callbacks import Callback
from worker.training.data import TrainData, TrainingFailed
from worker.training.engine import train

COMPILE = {
    "optimizer": {"type": "adam", "learning_rate": 0.01},
    "loss": "sparse_categorical_crossentropy",
    "metrics": ["accuracy"],
}


def example(name: str, **fit: Any) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    raw["fit"] |= fit
    return raw


def dbn(epochs: int = 5, **section: Any) -> dict[str, Any]:
    return {
        "family": "dbn",
        "dataset": {"name": "digits"},
        "compile": COMPILE,
        "dbn": {"hidden_units": [32, 16], "pretrain_epochs": 2, **section},
        "fit": {"epochs": epochs, "batch_size": 64, "validation_split": 0.2, "seed": 3},
    }


def refusal(raw: dict[str, Any], info: DataInfo | None = None) -> SpecError:
    spec = JobSpec.model_validate(raw)
    with pytest.raises(SpecError) as caught:
        dry_run(spec, info or load_builtin(spec.dataset, 0).info())
    return caught.value


def held_out(raw: dict[str, Any]) -> np.ndarray:
    digits = load_builtin(DatasetSpec(name="digits"), seed=0)
    return digits.x[
        split_indices(len(digits.x), raw["fit"]["validation_split"], raw["fit"]["seed"])[1]
    ]


def test_free_energy_is_minus_log_of_the_sum_over_hidden_states() -> None:
    torch.manual_seed(0)
    for gaussian in (False, True):
        rbm = RBM(3, 4, gaussian)
        torch.nn.init.normal_(rbm.weight, std=1.0)
        torch.nn.init.normal_(rbm.visible_bias)
        torch.nn.init.normal_(rbm.hidden_bias)
        v = torch.rand(5, 3)
        states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)))  # every h, 16 x 4
        energy = -(v @ rbm.weight.t() @ states.t()) - (states @ rbm.hidden_bias)  # (5, 16)
        if gaussian:
            visible = 0.5 * (v - rbm.visible_bias).square().sum(1, keepdim=True)
        else:
            visible = -(v @ rbm.visible_bias)[:, None]
        brute = -torch.logsumexp(-(energy + visible), dim=1)
        torch.testing.assert_close(rbm.free_energy(v), brute, atol=1e-5, rtol=1e-5)


def test_binarize_turns_raw_features_into_zeros_and_ones_for_training_and_predict() -> None:
    digits = load_builtin(DatasetSpec(name="digits"), seed=0)
    p = prepare(digits, validation_split=0.2, test_split=0.0, seed=1, standardize=None, binarize=8)
    assert set(np.unique(p.x_train).tolist()) == {0.0, 1.0} and p.x_val is not None
    assert p.preprocessing["features"] is None and p.preprocessing["binarize"] == 8
    keep, _ = split_indices(len(digits.x), 0.2, 1)
    np.testing.assert_array_equal(p.x_train, (digits.x[keep] > 8).astype(np.float32))


def test_rbm_learns_by_contrastive_divergence_and_predicts_from_its_checkpoint(
    tmp_path: Path,
) -> None:
    raw = example("digits_rbm", epochs=5)
    spec = JobSpec.model_validate(raw)
    report = dry_run(spec, load_builtin(spec.dataset, 0).info())
    assert report.parameters == 64 * 128 + 64 + 128 and report.output_shape == (128,)
    result = train(spec, load_train_data(spec), tmp_path)
    losses = [h["loss"] for h in result.history]
    assert all(later < earlier for earlier, later in itertools.pairwise(losses)), losses
    assert losses[-1] < 0.5 * losses[0]
    last = result.history[-1]
    assert {"free_energy", "val_loss", "val_free_energy", "free_energy_gap"} <= set(last)
    assert result.model_path is not None
    predictor = Predictor.load(result.model_path)
    x = held_out(raw)
    hidden = np.asarray(
        predictor.run("transform", OperationRequest(instances=x.tolist()))["predictions"]
    )
    assert hidden.shape == (len(x), 128) and hidden.min() >= 0.0 and hidden.max() <= 1.0
    out = predictor.run("reconstruct", OperationRequest(instances=x.tolist()))["predictions"]
    reconstructed = np.asarray(out)
    assert reconstructed.shape == x.shape
    # Predict binarises the raw instances as training did: its error is the engine's val_loss.
    assert np.mean((reconstructed - (x > 8)) ** 2) == pytest.approx(last["val_loss"], rel=1e-4)


def test_dry_run_refuses_visible_units_that_do_not_fit_the_data() -> None:
    bernoulli_on_iris = refusal(
        {"family": "rbm", "dataset": {"name": "iris"}, "rbm": {"hidden_units": 8}}
    )
    assert (
        bernoulli_on_iris.loc == ("rbm", "visible")
        and "dataset.binarize" in bernoulli_on_iris.message
    )
    raw_iris = refusal(
        {
            "family": "rbm",
            "dataset": {"name": "iris", "standardize": False},
            "rbm": {"hidden_units": 8},
        }
    )
    assert (
        raw_iris.loc == ("rbm", "visible") and "iris's features are real values" in raw_iris.message
    )
    standardised = refusal(
        {
            "family": "dbn",
            "dataset": {"name": "digits", "standardize": True},
            "compile": COMPILE,
            "dbn": {"hidden_units": [8]},
            "fit": {"epochs": 6},
        }
    )
    assert standardised.loc == ("dbn", "visible") and "'gaussian'" in standardised.message
    gaussian = refusal(
        {
            "family": "rbm",
            "dataset": {"name": "digits"},
            "rbm": {"hidden_units": 8, "visible": "gaussian"},
        }
    )
    assert gaussian.loc == ("dataset", "standardize")
    accepted = {
        "iris": (4, {"binarize": 5.0}),
        "digits": (64, {}),
    }  # binarised; images scaled to [0, 1]
    for name, (visible, options) in accepted.items():
        raw = {"family": "rbm", "dataset": {"name": name, **options}, "rbm": {"hidden_units": 8}}
        spec = JobSpec.model_validate(raw)
        assert (
            dry_run(spec, load_builtin(spec.dataset, 0).info()).parameters
            == visible * 8 + visible + 8
        )


def test_dry_run_refuses_dbn_epochs_monitors_and_losses_that_do_not_fit() -> None:
    too_few = refusal(dbn(epochs=4))
    assert too_few.loc == ("fit", "epochs") and "at least 5" in too_few.message
    stopping = dbn(epochs=8)
    stopping["fit"]["early_stopping"] = {"monitor": "val_loss", "patience": 2}
    assert refusal(stopping).loc == ("fit", "early_stopping")
    stopping["dbn"]["pretrain_epochs"] = (
        0  # fine-tuning only: every epoch's loss is the same quantity
    )
    assert (
        dry_run(
            JobSpec.model_validate(stopping), load_builtin(DatasetSpec(name="digits"), 0).info()
        ).parameters
        > 0
    )
    mse = dbn(epochs=8) | {"compile": {"loss": "mse"}}
    assert refusal(mse).loc == ("compile", "loss")
    regression = dbn(epochs=8) | {"dataset": {"name": "diabetes", "binarize": 0.0}}
    assert refusal(regression).loc == ("dataset",)


def test_the_worker_refuses_bernoulli_units_on_features_outside_zero_one(tmp_path: Path) -> None:
    """An uploaded table's range is unknown to the dry run; training checks the real values."""
    spec = JobSpec.model_validate(
        {
            "family": "rbm",
            "dataset": {"id": "upload1", "standardize": False},
            "rbm": {"hidden_units": 4},
        }
    )
    x = torch.linspace(0, 3, 40).reshape(10, 4)
    data = TrainData(DataInfo(input_shape=(4,), task="regression"), x, torch.zeros(10, 1))
    with pytest.raises(TrainingFailed, match=r"span \[0, 3\]: set dataset.binarize"):
        train(spec, data, tmp_path)


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step, self.seen = step, 0

    def on_step_end(self, epoch: int, step: int, batch: int) -> None:
        self.seen = step

    def should_stop(self) -> bool:
        return self.seen >= self.step


def weights(path: Path) -> dict[str, torch.Tensor]:
    return split_prefix(load_file(str(path.with_suffix(".safetensors"))), "model.")


def test_dbn_resumed_mid_pretraining_ends_as_an_unbroken_run(tmp_path: Path) -> None:
    spec = JobSpec.model_validate(dbn(epochs=6))
    data = load_train_data(spec)
    unbroken = train(spec, data, tmp_path / "a")
    history = unbroken.history
    assert [h["phase"] for h in history] == [0, 0, 0, 0, 1, 1] and [
        h.get("layer") for h in history[:4]
    ] == [1, 1, 2, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(
        history[-1]
    ) and "accuracy" not in history[0]
    steps = 23  # 1438 training samples / 64, the last batch of 30 kept
    interrupted = train(
        spec, data, tmp_path / "b", [StopAt(2 * steps + 5)]
    )  # in the second RBM's first epoch
    assert interrupted.status == "cancelled" and interrupted.epochs_done == 2
    resumed = train(spec, data, tmp_path / "b", resume=True)
    assert unbroken.model_path is not None and resumed.model_path is not None
    a, b = weights(unbroken.model_path), weights(resumed.model_path)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in history]
    predictor = Predictor.load(resumed.model_path)
    x = held_out(dbn())
    out = predictor.run(None, OperationRequest(instances=x.tolist()))
    assert out["classes"] == [str(i) for i in range(10)] and np.asarray(
        out["probabilities"]
    ).shape == (len(x), 10)
    assert data.y_val is not None
    accuracy = float(np.mean(np.asarray(out["class_ids"]) == data.y_val.numpy()))
    assert accuracy == pytest.approx(history[-1]["val_accuracy"], abs=1e-9)
    features = predictor.run("transform", OperationRequest(instances=x[:3].tolist()))["predictions"]
    assert np.asarray(features).shape == (3, 16)

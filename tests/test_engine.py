"""The training engine in-process: resume, cancel, failures, determinism, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.spec import JobSpec
from models.checkpoint import epoch_checkpoints, latest_checkpoint, read_checkpoint, split_prefix
from tests.helpers import digits_mlp, example
from worker.datasource import load_train_data
from worker.training.callbacks import Callback, TrainStart
from worker.training.engine import TrainingFailed, train


class Recorder(Callback):
    def __init__(self, stop_at_step: int | None = None) -> None:
        self.stop_at_step = stop_at_step
        self.steps = 0
        self.step_losses: list[tuple[int, float]] = []
        self.epochs: list[int] = []
        self.checkpoints: list[int] = []
        self.start: TrainStart | None = None

    def on_train_start(self, start: TrainStart) -> None:
        self.start = start

    def on_step_end(self, epoch: int, step: int, batch: int) -> None:
        self.steps = step

    def on_step_loss(self, epoch: int, step: int, loss: float) -> None:
        self.step_losses.append((step, loss))

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append(epoch)

    def on_checkpoint(self, info) -> None:  # type: ignore[no-untyped-def]
        self.checkpoints.append(info.epoch)

    def should_stop(self) -> bool:
        return self.stop_at_step is not None and self.steps >= self.stop_at_step


def weights(path: Path) -> dict[str, torch.Tensor]:
    return split_prefix(load_file(str(path.with_suffix(".safetensors"))), "model.")


def test_resume_gives_the_same_weights_as_an_unbroken_run(tmp_path: Path) -> None:
    spec = digits_mlp(epochs=4)
    data = load_train_data(spec)
    unbroken = train(spec, data, tmp_path / "a")
    steps_per_epoch = 23  # 1438 training samples / 64, the last batch of 30 kept
    interrupted = train(
        spec, data, tmp_path / "b", [Recorder(stop_at_step=2 * steps_per_epoch + 1)]
    )
    assert interrupted.status == "cancelled" and interrupted.epochs_done == 2
    resumed = train(spec, data, tmp_path / "b", resume=True)
    assert resumed.status == "completed" and resumed.epochs_done == 4
    assert unbroken.model_path is not None and resumed.model_path is not None
    a, b = weights(unbroken.model_path), weights(resumed.model_path)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [h["loss"] for h in unbroken.history] == [h["loss"] for h in resumed.history]


def test_same_seed_gives_the_same_run(tmp_path: Path) -> None:
    spec = digits_mlp(epochs=2)
    data = load_train_data(spec)
    first, second = train(spec, data, tmp_path / "a"), train(spec, data, tmp_path / "b")
    assert [h["val_loss"] for h in first.history] == [h["val_loss"] for h in second.history]
    other = train(digits_mlp(epochs=2, seed=8), data, tmp_path / "c")
    assert other.history[0]["loss"] != first.history[0]["loss"]


def test_cancel_stops_within_one_step(tmp_path: Path) -> None:
    spec = digits_mlp(epochs=50)
    recorder = Recorder(stop_at_step=5)
    result = train(spec, load_train_data(spec), tmp_path, [recorder])
    assert result.status == "cancelled"
    assert recorder.steps == 5
    assert result.model_path is None and result.epochs_done == 0


def test_callbacks_hear_every_epoch_checkpoint_and_step_loss(tmp_path: Path) -> None:
    spec = digits_mlp(epochs=3, log_every_steps=10, keep_checkpoints=2)
    recorder = Recorder()
    result = train(spec, load_train_data(spec), tmp_path, [recorder])
    assert recorder.start is not None and recorder.start.steps_per_epoch == 23
    assert recorder.epochs == [1, 2, 3] and recorder.checkpoints == [1, 2, 3]
    assert [s for s, _ in recorder.step_losses] == list(range(10, 3 * 23 + 1, 10))
    assert [e for e, _ in epoch_checkpoints(tmp_path / "checkpoints")] == [
        3,
        2,
    ]  # pruned to keep_checkpoints
    for key in (
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
        "epoch_seconds",
        "samples_per_second",
    ):
        assert key in result.history[0]


def test_nan_loss_fails_fast_with_a_reason(tmp_path: Path) -> None:
    spec = JobSpec.model_validate(
        {
            "dataset": {"name": "diabetes", "standardize": False},
            "model": {
                "layers": [
                    {"type": "dense", "units": 16, "activation": "relu"},
                    {"type": "dense", "units": 1},
                ]
            },
            "compile": {"optimizer": {"type": "sgd", "learning_rate": 10.0}, "loss": "mse"},
            "fit": {"epochs": 20},
        }
    )
    recorder = Recorder()
    with pytest.raises(
        TrainingFailed,
        match=r"the loss became (nan|inf) at epoch 1, step \d+; lower the learning_rate",
    ):
        train(spec, load_train_data(spec), tmp_path, [recorder])
    assert recorder.steps < 14  # one epoch of diabetes is 14 steps: it stopped inside the first


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path: Path) -> None:
    spec = digits_mlp(epochs=3)
    train(spec, load_train_data(spec), tmp_path)
    directory = tmp_path / "checkpoints"
    assert latest_checkpoint(directory) == directory / "epoch-0003.json"
    newest = directory / "epoch-0003.safetensors"
    raw = bytearray(newest.read_bytes())
    raw[-10] ^= 0xFF
    newest.write_bytes(bytes(raw))
    assert latest_checkpoint(directory) == directory / "epoch-0002.json"
    _, meta = read_checkpoint(directory / "epoch-0002.json")
    assert meta.epoch == 2 and len(meta.sha256) == 64


def test_checkpoints_are_safetensors_and_json_only(tmp_path: Path) -> None:
    spec = digits_mlp(epochs=1)
    result = train(spec, load_train_data(spec), tmp_path)
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["epoch-0001.json", "epoch-0001.safetensors", "model.json", "model.safetensors"]
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["spec"] == spec.model_dump(mode="json")
    assert meta["preprocessing"]["features"]["scale"] == pytest.approx(1 / 16)
    assert result.history == meta["history"]


def test_early_stopping_restores_the_best_weights(tmp_path: Path) -> None:
    spec = digits_mlp(
        epochs=40,
        early_stopping={
            "monitor": "val_loss",
            "patience": 0,
            "min_delta": 0.05,
            "restore_best": True,
        },
    )
    result = train(spec, load_train_data(spec), tmp_path)
    assert result.status == "early_stopped" and result.epochs_done < 40
    assert result.best_epoch == result.epochs_done - 1
    assert result.model_path is not None
    best = weights(tmp_path / "checkpoints" / "best.json")
    final = weights(result.model_path)
    assert all(torch.equal(best[k], final[k]) for k in best)


def test_held_out_test_split_is_evaluated(tmp_path: Path) -> None:
    spec = example("iris_mlp", epochs=5)
    result = train(spec, load_train_data(spec), tmp_path)
    assert set(result.test_metrics) == {"test_loss", "test_accuracy"}
    assert 0.0 <= result.test_metrics["test_accuracy"] <= 1.0


def test_resume_refuses_a_checkpoint_of_another_spec(tmp_path: Path) -> None:
    spec = digits_mlp(epochs=1)
    data = load_train_data(spec)
    train(spec, data, tmp_path)
    with pytest.raises(TrainingFailed, match="written for a different spec"):
        train(digits_mlp(epochs=2, seed=1), data, tmp_path, resume=True)

"""Image augmentation: the transforms themselves, training on the training split only, exact resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from core.datasets import builtin_info
from core.spec import Augmentation, DatasetSpec, JobSpec
from models.errors import SpecError
from models.validation import dry_run
from tests.helpers import digits_mlp
from tests.test_engine import Recorder, weights
from worker.datasource import load_train_data
from worker.training.augment import augment
from worker.training.engine import Trainer, train


def _dot(n: int = 64) -> torch.Tensor:
    """Images of one bright pixel at (row 3, column 1) of 8x8."""
    x = torch.zeros(n, 1, 8, 8)
    x[:, 0, 3, 1] = 1.0
    return x


def _seeded(x: torch.Tensor, spec: Augmentation, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return augment(x, spec)


def test_flips_mirror_about_half_of_the_batch() -> None:
    x = _dot()
    out = _seeded(x, Augmentation(horizontal_flip=True))
    flipped = out[:, 0, 3, 6] == 1.0
    assert torch.equal(out[flipped], x[flipped].flip(-1)) and torch.equal(
        out[~flipped], x[~flipped]
    )
    assert 16 <= int(flipped.sum()) <= 48
    out = _seeded(x, Augmentation(vertical_flip=True))
    assert set(out[:, 0, :, 1].argmax(dim=1).tolist()) == {
        3,
        4,
    }  # row 3 stays, or becomes row 8-1-3


def test_shift_moves_the_pixel_within_its_range_and_keeps_the_shape() -> None:
    x = _dot(256)
    out = _seeded(x, Augmentation(shift=0.25))
    assert out.shape == x.shape
    rows = torch.arange(8.0).view(1, 8, 1)
    cols = torch.arange(8.0).view(1, 1, 8)
    mass = out[:, 0].sum(dim=(1, 2)).clamp_min(1e-6)
    row = (out[:, 0] * rows).sum(dim=(1, 2)) / mass
    col = (out[:, 0] * cols).sum(dim=(1, 2)) / mass
    kept = mass > 0.5  # shifted off the edge: nothing to measure
    assert (row[kept] - 3).abs().max() <= 2.0 + 1e-4 and (col[kept] - 1).abs().max() <= 2.0 + 1e-4
    assert (row[kept] - 3).abs().max() > 0.5  # it did move


def test_rotation_keeps_the_centre_and_turns_the_rest() -> None:
    x = torch.zeros(32, 1, 9, 9)
    x[:, 0, 4, :] = 1.0  # a horizontal bar through the centre
    out = _seeded(x, Augmentation(rotation=90))
    assert torch.allclose(out[:, 0, 4, 4], torch.ones(32), atol=1e-5)  # the centre pixel is fixed
    assert (out[:, 0, 0, 4] > 0.5).any()  # some bars turned near vertical


def test_the_same_seed_draws_the_same_batch_and_noise_has_its_stddev() -> None:
    x = torch.rand(128, 1, 8, 8)
    spec = Augmentation(horizontal_flip=True, shift=0.1, rotation=15, noise_stddev=0.5)
    assert torch.equal(_seeded(x, spec, 3), _seeded(x, spec, 3))
    assert not torch.equal(_seeded(x, spec, 3), _seeded(x, spec, 4))
    noise = _seeded(x, Augmentation(noise_stddev=0.5)) - x
    assert abs(noise.std().item() - 0.5) < 0.02


def _cnn(epochs: int, augmentation: dict[str, Any] | None, **fit: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "dataset": {"name": "digits"},
            "model": {
                "layers": [
                    {
                        "type": "conv2d",
                        "filters": 8,
                        "kernel_size": 3,
                        "padding": "same",
                        "activation": "relu",
                    },
                    {"type": "maxpool2d"},
                    {"type": "flatten"},
                    {"type": "dense", "units": 10, "activation": "softmax"},
                ]
            },
            "compile": {
                "optimizer": {"type": "adam", "learning_rate": 0.01},
                "loss": "sparse_categorical_crossentropy",
                "metrics": ["accuracy"],
            },
            "fit": {
                "epochs": epochs,
                "batch_size": 64,
                "validation_split": 0.2,
                "seed": 3,
                "augmentation": augmentation,
                **fit,
            },
        }
    )


AUGMENT = {"shift": 0.1, "rotation": 10, "noise_stddev": 0.05}


def test_augmented_training_learns_and_evaluation_sees_the_data_untouched(tmp_path: Path) -> None:
    spec = _cnn(6, AUGMENT)
    data = load_train_data(spec)
    trainer = Trainer(spec, data, tmp_path)
    result = trainer.fit()
    assert result.history[-1]["val_accuracy"] >= 0.9
    # Augmented training accuracy trails the clean evaluation of the same weights on the same rows.
    clean = trainer.evaluate(data.x_train, data.y_train)
    assert clean == trainer.evaluate(
        data.x_train, data.y_train
    )  # no random transform in evaluation
    assert clean["accuracy"] > result.history[-1]["accuracy"]
    plain = train(_cnn(6, None), data, tmp_path / "plain")
    assert plain.history[-1]["loss"] != result.history[-1]["loss"]


def test_an_augmented_run_resumes_exactly(tmp_path: Path) -> None:
    spec = digits_mlp(epochs=3, augmentation={"noise_stddev": 0.3})
    data = load_train_data(spec)
    unbroken = train(spec, data, tmp_path / "a")
    assert train(spec, data, tmp_path / "b", [Recorder(stop_at_step=23 + 1)]).epochs_done == 1
    resumed = train(spec, data, tmp_path / "b", resume=True)
    assert unbroken.model_path is not None and resumed.model_path is not None
    a, b = weights(unbroken.model_path), weights(resumed.model_path)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("dataset", "augmentation", "loc", "message"),
    [
        (
            "iris",
            {"horizontal_flip": True},
            ("fit", "augmentation"),
            "flips, shifts and rotations need (C, H, W) images; this dataset's samples are (4,): "
            "keep only noise_stddev",
        ),
        (
            "iris",
            {"rotation": 5},
            ("fit", "augmentation"),
            "flips, shifts and rotations need (C, H, W) images; this dataset's samples are (4,): "
            "keep only noise_stddev",
        ),
    ],
)
def test_geometric_augmentation_needs_images(
    dataset: str, augmentation: dict[str, Any], loc: tuple[str, ...], message: str
) -> None:
    spec = JobSpec.model_validate(
        {
            "dataset": {"name": dataset},
            "model": {"layers": [{"type": "dense", "units": 3, "activation": "softmax"}]},
            "compile": {"loss": "sparse_categorical_crossentropy"},
            "fit": {"augmentation": augmentation},
        }
    )
    with pytest.raises(SpecError) as caught:
        dry_run(spec, builtin_info(DatasetSpec(name=dataset)))
    assert (caught.value.message, caught.value.loc) == (message, loc)


def test_noise_alone_is_fine_on_tabular_data() -> None:
    spec = JobSpec.model_validate(
        {
            "dataset": {"name": "iris"},
            "model": {"layers": [{"type": "dense", "units": 3, "activation": "softmax"}]},
            "compile": {"loss": "sparse_categorical_crossentropy"},
            "fit": {"augmentation": {"noise_stddev": 0.1}},
        }
    )
    assert dry_run(spec, builtin_info(DatasetSpec(name="iris"))).parameters == 15

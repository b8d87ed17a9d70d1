"""The job spec end to end: every optimizer, loss and schedule trains; every bad spec is refused
with its exact message and the path of the field at fault."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from core.datasets import load_dataset
from core.spec import DataInfo, JobSpec
from models.errors import SpecError
from models.validation import FLOAT_BYTES, dry_run
from worker.datasource import load_train_data
from worker.training.engine import Trainer, TrainResult, train

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"

SINE = {"name": "sine", "n_samples": 200}
MOONS = {"name": "moons", "n_samples": 200}
BLOBS = {"name": "blobs", "n_samples": 200}

FLATTEN = {"type": "flatten"}


def dense(units: int, activation: str = "linear") -> dict[str, Any]:
    return {"type": "dense", "units": units, "activation": activation}


REGRESSION_LAYERS = [dense(16, "tanh"), dense(1)]


def job(
    dataset: dict[str, Any] | None = None,
    layers: list[dict[str, Any]] | None = None,
    loss: str = "mse",
    optimizer: Any = "adam",
    metrics: tuple[str, ...] = (),
    compile_extra: dict[str, Any] | None = None,
    **fit: Any,
) -> JobSpec:
    return JobSpec.model_validate(
        {
            "dataset": dataset or SINE,
            "model": {"layers": layers or REGRESSION_LAYERS},
            "compile": {
                "loss": loss,
                "optimizer": optimizer,
                "metrics": list(metrics),
                **(compile_extra or {}),
            },
            "fit": {"epochs": 3, "batch_size": 32, **fit},
        }
    )


def run(spec: JobSpec, out: Path) -> TrainResult:
    result = train(spec, load_train_data(spec), out)
    assert result.status == "completed"
    assert result.epochs_done == spec.fit.epochs
    assert len(result.history) == spec.fit.epochs
    assert all(math.isfinite(h["loss"]) for h in result.history)
    assert result.model_path is not None
    assert result.model_path.exists()
    return result


def lrs(result: TrainResult) -> list[float]:
    return [h["lr"] for h in result.history]


# -- (a) every optimizer, loss, schedule and regularizer trains ------------------------------

OPTIMIZERS = [
    pytest.param(
        {"type": "sgd", "learning_rate": 0.05},
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0},
        id="sgd",
    ),
    pytest.param(
        {
            "type": "sgd",
            "learning_rate": 0.05,
            "momentum": 0.9,
            "nesterov": True,
            "weight_decay": 1e-4,
        },
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
        id="sgd-momentum-nesterov",
    ),
    pytest.param(
        {
            "type": "adagrad",
            "learning_rate": 0.05,
            "initial_accumulator_value": 0.2,
            "epsilon": 1e-6,
        },
        torch.optim.Adagrad,
        {"lr": 0.05, "initial_accumulator_value": 0.2, "eps": 1e-6},
        id="adagrad",
    ),
    pytest.param(
        {"type": "rmsprop", "learning_rate": 0.01, "rho": 0.8},
        torch.optim.RMSprop,
        {"lr": 0.01, "alpha": 0.8, "momentum": 0.0, "centered": False, "eps": 1e-7},
        id="rmsprop",
    ),
    pytest.param(
        {"type": "rmsprop", "learning_rate": 0.01, "centered": True, "momentum": 0.5},
        torch.optim.RMSprop,
        {"lr": 0.01, "alpha": 0.9, "momentum": 0.5, "centered": True},
        id="rmsprop-centered-momentum",
    ),
    pytest.param(
        {"type": "adam", "learning_rate": 0.01, "beta_1": 0.8, "beta_2": 0.99},
        torch.optim.Adam,
        {"lr": 0.01, "betas": (0.8, 0.99), "amsgrad": False, "weight_decay": 0.0, "eps": 1e-7},
        id="adam",
    ),
    pytest.param(
        {"type": "adam", "learning_rate": 0.01, "amsgrad": True},
        torch.optim.Adam,
        {"lr": 0.01, "betas": (0.9, 0.999), "amsgrad": True},
        id="adam-amsgrad",
    ),
    pytest.param(
        {"type": "adamw", "learning_rate": 0.01},
        torch.optim.AdamW,
        {"lr": 0.01, "weight_decay": 0.004, "amsgrad": False},
        id="adamw",
    ),
]


@pytest.mark.parametrize("optimizer", [pytest.param(p.values[0], id=p.id) for p in OPTIMIZERS])
def test_train_completes_with_optimizer(tmp_path, optimizer):
    result = run(job(optimizer=optimizer, metrics=("mae",)), tmp_path)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert lrs(result) == [optimizer["learning_rate"]] * 3
    assert all(h["mae"] >= 0 for h in result.history)


@pytest.mark.parametrize(("optimizer", "torch_class", "expected"), OPTIMIZERS)
def test_trainer_maps_optimizer_hyperparameters(tmp_path, optimizer, torch_class, expected):
    spec = job(optimizer=optimizer, epochs=1)
    trainer = Trainer(spec, load_train_data(spec), tmp_path)
    assert type(trainer.optimizer) is torch_class
    (group,) = trainer.optimizer.param_groups
    for key, value in expected.items():
        assert group[key] == pytest.approx(value), key


def test_optimizer_name_string_means_defaults():
    spec = job(optimizer="rmsprop")
    assert spec.compile.optimizer.type == "rmsprop"
    assert spec.compile.optimizer.learning_rate == 0.001
    assert job().compile.optimizer.type == "adam"


LOSSES = [
    pytest.param("mse", SINE, REGRESSION_LAYERS, ("mae", "mse"), id="mse"),
    pytest.param("mae", SINE, REGRESSION_LAYERS, ("mae",), id="mae"),
    pytest.param("huber", SINE, REGRESSION_LAYERS, ("mse",), id="huber"),
    pytest.param(
        "binary_crossentropy",
        MOONS,
        [dense(16, "relu"), dense(1, "sigmoid")],
        ("accuracy",),
        id="binary_crossentropy",
    ),
    pytest.param(
        "categorical_crossentropy",
        BLOBS,
        [dense(16, "relu"), dense(3, "softmax")],
        ("accuracy",),
        id="categorical_crossentropy",
    ),
    pytest.param(
        "sparse_categorical_crossentropy",
        BLOBS,
        [dense(16, "relu"), dense(3, "softmax")],
        ("accuracy",),
        id="sparse_categorical_crossentropy",
    ),
]


@pytest.mark.parametrize(("loss", "dataset", "layers", "metrics"), LOSSES)
def test_train_completes_with_loss(tmp_path, loss, dataset, layers, metrics):
    spec = job(
        dataset,
        layers,
        loss,
        {"type": "adam", "learning_rate": 0.01},
        metrics,
        validation_split=0.2,
    )
    result = run(spec, tmp_path)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    last = result.history[-1]
    assert math.isfinite(last["val_loss"])
    for metric in metrics:
        assert math.isfinite(last[metric])
        assert math.isfinite(last[f"val_{metric}"])
        if metric == "accuracy":
            assert 0.0 <= last[metric] <= 1.0
        else:
            assert last[metric] >= 0.0


def test_categorical_and_sparse_crossentropy_train_alike(tmp_path):
    """Both take class ids and train on logits with cross_entropy, so the same seed gives the same run."""
    layers = [dense(16, "relu"), dense(3, "softmax")]
    histories = [
        [h["loss"] for h in run(job(BLOBS, layers, loss), tmp_path / loss).history]
        for loss in ("categorical_crossentropy", "sparse_categorical_crossentropy")
    ]
    assert histories[0] == pytest.approx(histories[1])


@pytest.mark.parametrize(("step_size", "gamma"), [(1, 0.5), (2, 0.1)])
def test_step_schedule_decays_every_step_size_epochs(tmp_path, step_size, gamma):
    base = 0.1
    spec = job(
        optimizer={"type": "sgd", "learning_rate": base},
        lr_schedule={"type": "step", "step_size": step_size, "gamma": gamma},
    )
    result = run(spec, tmp_path)
    assert lrs(result) == pytest.approx([base * gamma ** (e // step_size) for e in range(3)])


@pytest.mark.parametrize(
    ("t_max", "min_lr", "epochs"), [(None, 0.01, 3), (2, 0.001, 3), (4, 0.0, 3)]
)
def test_cosine_schedule_follows_half_cosine(tmp_path, t_max, min_lr, epochs):
    base = 0.1
    schedule = {"type": "cosine", "min_lr": min_lr} | ({} if t_max is None else {"t_max": t_max})
    spec = job(
        optimizer={"type": "sgd", "learning_rate": base}, lr_schedule=schedule, epochs=epochs
    )
    result = run(spec, tmp_path)
    period = t_max or epochs
    expected = [
        min_lr + (base - min_lr) * (1 + math.cos(math.pi * min(e, period) / period)) / 2
        for e in range(epochs)
    ]
    assert lrs(result) == pytest.approx(expected)
    assert lrs(result)[0] == pytest.approx(base)
    if period < epochs:
        assert lrs(result)[-1] == pytest.approx(min_lr)  # held at the minimum past t_max


def test_reduce_on_plateau_cuts_lr_after_patience_down_to_min_lr(tmp_path):
    # min_delta is so large that no epoch after the first counts as an improvement.
    schedule = {
        "type": "reduce_on_plateau",
        "monitor": "loss",
        "patience": 1,
        "factor": 0.5,
        "min_delta": 1e6,
        "min_lr": 0.04,
    }
    spec = job(optimizer={"type": "sgd", "learning_rate": 0.1}, lr_schedule=schedule, epochs=4)
    assert lrs(run(spec, tmp_path)) == pytest.approx([0.1, 0.1, 0.05, 0.04])


@pytest.mark.parametrize(
    "schedule",
    [
        {"type": "reduce_on_plateau", "patience": 0, "factor": 0.5},
        {
            "type": "reduce_on_plateau",
            "monitor": "val_mae",
            "patience": 1,
            "factor": 0.2,
            "min_delta": 0.01,
        },
    ],
)
def test_reduce_on_plateau_follows_monitor(tmp_path, schedule):
    base = 0.3
    spec = job(
        optimizer={"type": "sgd", "learning_rate": base},
        metrics=("mae",),
        validation_split=0.2,
        lr_schedule=schedule,
        epochs=5,
    )
    result = run(spec, tmp_path)
    s = spec.fit.lr_schedule
    # The reference: Keras' ReduceLROnPlateau, applied to the monitored values the run reported.
    lr, best, wait, expected = base, None, 0, []
    for h in result.history:
        expected.append(lr)
        value = h[s.monitor]
        if best is None or value < best - s.min_delta:
            best, wait = value, 0
        else:
            wait += 1
        if wait >= s.patience and wait > 0:
            lr, wait = max(lr * s.factor, s.min_lr), 0
    assert lrs(result) == pytest.approx(expected)
    assert min(expected) < base  # the run did plateau, so a cut was checked


@pytest.mark.parametrize(
    "regularization",
    [{"l1": 1e-3}, {"l2": 1e-2}, {"l1": 1e-4, "l2": 1e-3}],
    ids=["l1", "l2", "l1+l2"],
)
def test_train_completes_with_regularization(tmp_path, regularization):
    spec = job(compile_extra={"regularization": regularization})
    result = run(spec, tmp_path)
    assert result.history[-1]["loss"] < result.history[0]["loss"]


@pytest.mark.parametrize(("l1", "l2"), [(1e-3, 0.0), (0.0, 1e-2), (1e-3, 1e-2)])
def test_evaluate_adds_kernel_penalty_to_loss(tmp_path, l1, l2):
    layers = [dense(16, "tanh"), dense(8, "relu"), dense(1)]
    plain_spec = job(layers=layers)
    reg_spec = job(layers=layers, compile_extra={"regularization": {"l1": l1, "l2": l2}})
    data = load_train_data(plain_spec)
    plain = Trainer(plain_spec, data, tmp_path / "plain")
    regularized = Trainer(
        reg_spec, data, tmp_path / "reg"
    )  # the same seed: the same initial weights
    kernels = [
        m.weight.detach() for m in regularized.model.modules() if isinstance(m, torch.nn.Linear)
    ]
    assert len(kernels) == 3
    expected = sum(l1 * w.abs().sum().item() + l2 * w.square().sum().item() for w in kernels)
    difference = (
        regularized.evaluate(data.x_train, data.y_train)["loss"]
        - plain.evaluate(data.x_train, data.y_train)["loss"]
    )
    assert expected > 0
    assert difference == pytest.approx(expected, rel=1e-4)


def _weights(trainer: Trainer) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])


def _total_change(spec: JobSpec, out: Path) -> tuple[torch.Tensor, int]:
    trainer = Trainer(spec, load_train_data(spec), out)
    before = _weights(trainer)
    result = trainer.fit()
    assert all(math.isfinite(h["loss"]) for h in result.history)
    return _weights(trainer) - before, trainer.step


def test_clip_grad_value_bounds_every_update(tmp_path):
    lr, clip = 0.1, 1e-3
    clipped = job(
        optimizer={"type": "sgd", "learning_rate": lr},
        compile_extra={"clip_grad_value": clip},
        epochs=2,
    )
    change, steps = _total_change(clipped, tmp_path / "clipped")
    bound = steps * lr * clip
    # float32 rounding of the weights (about 1e-7 a step) is the only slack.
    assert 0 < change.abs().max().item() <= bound + 1e-5
    free, _ = _total_change(
        job(optimizer={"type": "sgd", "learning_rate": lr}, epochs=2), tmp_path / "free"
    )
    assert free.abs().max().item() > bound  # the bound is not vacuous


def test_clip_grad_norm_bounds_every_update(tmp_path):
    lr, clip = 0.1, 1e-2
    clipped = job(
        optimizer={"type": "sgd", "learning_rate": lr},
        compile_extra={"clip_grad_norm": clip},
        epochs=2,
    )
    change, steps = _total_change(clipped, tmp_path / "clipped")
    bound = steps * lr * clip
    assert 0 < change.norm().item() <= bound + 1e-5
    free, _ = _total_change(
        job(optimizer={"type": "sgd", "learning_rate": lr}, epochs=2), tmp_path / "free"
    )
    assert free.norm().item() > bound


def test_train_completes_with_both_clips_and_regularization(tmp_path):
    extra = {
        "clip_grad_norm": 1.0,
        "clip_grad_value": 0.5,
        "regularization": {"l1": 1e-4, "l2": 1e-4},
    }
    result = run(job(compile_extra=extra), tmp_path)
    assert result.history[-1]["loss"] < result.history[0]["loss"]


# -- (b) bad specs: pydantic's refusals ------------------------------------------------------

BASE: dict[str, Any] = {
    "dataset": {"name": "digits"},
    "model": {"layers": [FLATTEN, dense(10, "softmax")]},
    "compile": {"loss": "sparse_categorical_crossentropy"},
}
DENSE_TAGS = (
    "'dense', 'conv1d', 'conv2d', 'maxpool1d', 'maxpool2d', 'avgpool2d', 'global_avgpool', 'batchnorm', "
    "'layernorm', 'dropout', 'flatten', 'reshape', 'activation', 'embedding', 'conv2d_transpose', 'upsample2d', "
    "'rnn', 'lstm', 'gru', 'positional_encoding', 'multi_head_attention', 'transformer_encoder', 'sequence_pool'"
)


def _with(**sections: Any) -> dict[str, Any]:
    return {**BASE, **sections}


def _layers(*layers: dict[str, Any]) -> dict[str, Any]:
    return _with(model={"layers": [FLATTEN, *layers]})


BAD_SPECS = [
    # (payload, loc, type, message); a message starting with "Value error, " is ours, matched exactly.
    pytest.param(
        _with(extra=1),
        ("extra",),
        "extra_forbidden",
        "Extra inputs are not permitted",
        id="extra-top",
    ),
    pytest.param(
        _layers({"type": "dense", "units": 10, "activaton": "softmax"}),
        ("model", "layers", 1, "dense", "activaton"),
        "extra_forbidden",
        "Extra inputs are not permitted",
        id="extra-layer-field",
    ),
    pytest.param(
        _with(fit={"epoch": 3}),
        ("fit", "epoch"),
        "extra_forbidden",
        "Extra inputs are not permitted",
        id="extra-fit-field",
    ),
    pytest.param(
        _with(compile={"loss": "mse", "optimizer": {"type": "adam", "lr": 0.1}}),
        ("compile", "optimizer", "adam", "lr"),
        "extra_forbidden",
        "Extra inputs are not permitted",
        id="extra-optimizer-field",
    ),
    pytest.param(
        _layers({"type": "dropout", "rate": 1.5}, dense(10)),
        ("model", "layers", 1, "dropout", "rate"),
        "less_than",
        "Input should be less than 1",
        id="dropout-rate-1.5",
    ),
    pytest.param(
        _layers({"type": "dense", "units": 0}),
        ("model", "layers", 1, "dense", "units"),
        "greater_than_equal",
        "Input should be greater than or equal to 1",
        id="dense-units-0",
    ),
    pytest.param(
        _layers({"type": "conv1d", "filters": 2, "kernel_size": 65}),
        ("model", "layers", 1, "conv1d", "kernel_size"),
        "less_than_equal",
        "Input should be less than or equal to 64",
        id="kernel-65",
    ),
    pytest.param(
        _with(fit={"epochs": 0}),
        ("fit", "epochs"),
        "greater_than_equal",
        "Input should be greater than or equal to 1",
        id="epochs-0",
    ),
    pytest.param(
        _with(fit={"validation_split": 0.95}),
        ("fit", "validation_split"),
        "less_than_equal",
        "Input should be less than or equal to 0.9",
        id="validation-split-0.95",
    ),
    pytest.param(
        _with(
            compile={"loss": "mse", "optimizer": {"type": "adam", "learning_rate": float("nan")}}
        ),
        ("compile", "optimizer", "adam", "learning_rate"),
        "finite_number",
        "Input should be a finite number",
        id="learning-rate-nan",
    ),
    pytest.param(
        _with(compile={"loss": "mse", "optimizer": {"type": "sgd", "learning_rate": float("inf")}}),
        ("compile", "optimizer", "sgd", "learning_rate"),
        "finite_number",
        "Input should be a finite number",
        id="learning-rate-inf",
    ),
    pytest.param(
        _with(compile={"loss": "mse", "clip_grad_norm": float("nan")}),
        ("compile", "clip_grad_norm"),
        "finite_number",
        "Input should be a finite number",
        id="clip-nan",
    ),
    pytest.param(
        _with(compile={"loss": "mse", "optimizer": {"type": "adam", "learning_rate": 0}}),
        ("compile", "optimizer", "adam", "learning_rate"),
        "greater_than",
        "Input should be greater than 0",
        id="learning-rate-0",
    ),
    pytest.param(
        _layers({"type": "densse", "units": 10}),
        ("model", "layers", 1),
        "union_tag_invalid",
        f"Input tag 'densse' found using 'type' does not match any of the expected tags: {DENSE_TAGS}",
        id="unknown-layer-type",
    ),
    pytest.param(
        _layers({"units": 10}),
        ("model", "layers", 1),
        "union_tag_not_found",
        "Unable to extract tag using discriminator 'type'",
        id="layer-without-type",
    ),
    pytest.param(
        _layers({"type": "dense", "units": 10, "activation": "swish"}),
        ("model", "layers", 1, "dense", "activation"),
        "literal_error",
        "Input should be 'relu', ",
        id="unknown-activation",
    ),
    pytest.param(
        _with(compile={"loss": "mse", "optimizer": "adamx"}),
        ("compile", "optimizer"),
        "union_tag_invalid",
        "Input tag 'adamx' found using 'type' does not match any of the expected tags: "
        "'sgd', 'adagrad', 'rmsprop', 'adam', 'adamw'",
        id="unknown-optimizer",
    ),
    pytest.param(
        _with(compile={"loss": "hinge"}),
        ("compile", "loss"),
        "literal_error",
        "Input should be 'mse', ",
        id="unknown-loss",
    ),
    pytest.param(
        _with(model={"preset": "resnet"}),
        ("model", "preset"),
        "union_tag_invalid",
        "Input tag 'resnet' found using 'name' does not match any of the expected tags: "
        "'mlp', 'shallow_vggnet', 'alvinn'",
        id="unknown-preset",
    ),
    pytest.param(
        _with(model={"layers": [FLATTEN, dense(10)], "preset": "mlp"}),
        ("model",),
        "value_error",
        "Value error, give exactly one of `layers` or `preset`",
        id="layers-and-preset",
    ),
    pytest.param(
        _with(model={}),
        ("model",),
        "value_error",
        "Value error, give exactly one of `layers` or `preset`",
        id="neither-layers-nor-preset",
    ),
    pytest.param(
        _with(model={"layers": []}),
        ("model", "layers"),
        "too_short",
        "List should have at least 1 item after validation, not 0",
        id="no-layers",
    ),
    pytest.param(
        _with(dataset={"name": "digits", "id": "abc"}),
        ("dataset",),
        "value_error",
        "Value error, give exactly one of `name` (built-in) or `id` (uploaded)",
        id="name-and-id",
    ),
    pytest.param(
        _with(compile={"loss": "mse", "optimizer": {"type": "sgd", "nesterov": True}}),
        ("compile", "optimizer", "sgd"),
        "value_error",
        "Value error, nesterov needs a momentum above 0",
        id="nesterov-without-momentum",
    ),
    pytest.param(
        _with(compile={"loss": "mse", "metrics": ["mae", "mae"]}),
        ("compile", "metrics"),
        "value_error",
        "Value error, metrics must not repeat",
        id="repeated-metric",
    ),
    pytest.param(
        _with(fit={"early_stopping": {"monitor": "val_loss"}}),
        (),
        "value_error",
        "Value error, fit.early_stopping monitors 'val_loss', which this job does not report; choose one of ['loss']",
        id="early-stopping-val-loss-without-validation",
    ),
    pytest.param(
        _with(fit={"lr_schedule": {"type": "reduce_on_plateau"}}),
        (),
        "value_error",
        "Value error, fit.lr_schedule monitors 'val_loss', which this job does not report; choose one of ['loss']",
        id="plateau-val-loss-without-validation",
    ),
    pytest.param(
        _with(fit={"validation_split": 0.2, "early_stopping": {"monitor": "val_accuracy"}}),
        (),
        "value_error",
        "Value error, fit.early_stopping monitors 'val_accuracy', which this job does not "
        "report; choose one of ['loss', 'val_loss']",
        id="early-stopping-unreported-metric",
    ),
    pytest.param(
        _with(dataset={"name": "digits", "validation_split": 0.2}, fit={"validation_split": 0.1}),
        (),
        "value_error",
        "Value error, give validation_split in `fit` or in `dataset`, not both",
        id="validation-split-twice",
    ),
]


@pytest.mark.parametrize(("payload", "loc", "error_type", "message"), BAD_SPECS)
def test_validate_rejects_bad_spec(payload, loc, error_type, message):
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(payload)
    errors = info.value.errors()
    assert len(errors) == 1, errors
    assert errors[0]["loc"] == loc
    assert errors[0]["type"] == error_type
    if message.startswith("Value error, ") or error_type in (
        "union_tag_invalid",
        "extra_forbidden",
    ):
        assert errors[0]["msg"] == message
    else:
        assert message in errors[0]["msg"]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(
            _with(fit={"validation_split": 0.2, "early_stopping": {"monitor": "val_loss"}}),
            id="fit-split",
        ),
        pytest.param(
            _with(
                dataset={"name": "digits", "validation_split": 0.2},
                fit={"early_stopping": {"monitor": "val_loss"}},
            ),
            id="dataset-split",
        ),
        pytest.param(
            _with(
                compile={"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
                fit={
                    "validation_split": 0.2,
                    "lr_schedule": {"type": "reduce_on_plateau", "monitor": "val_accuracy"},
                },
            ),
            id="val-accuracy",
        ),
        pytest.param(_with(fit={"early_stopping": {"monitor": "loss"}}), id="train-loss"),
    ],
)
def test_validate_accepts_reported_monitor(payload):
    spec = JobSpec.model_validate(payload)
    monitors = [m for m in (spec.fit.early_stopping, spec.fit.lr_schedule) if m is not None]
    assert monitors
    assert all(m.monitor in spec.metric_names() for m in monitors)


@pytest.mark.parametrize("path", sorted(EXAMPLES_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_roundtrip_example_spec_revalidates_equal(path):
    spec = JobSpec.model_validate(json.loads(path.read_text()))
    assert JobSpec.model_validate(spec.model_dump()) == spec
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec


# -- (b) bad specs: the dry run's refusals ---------------------------------------------------

DIGITS = DataInfo(input_shape=(1, 8, 8), task="classification", num_classes=10, kind="image")
SINE_INFO = DataInfo(input_shape=(1,), task="regression", target_dim=1)
MOONS_INFO = DataInfo(input_shape=(2,), task="classification", num_classes=2)
ROAD_INFO = DataInfo(input_shape=(30, 32), task="regression", target_dim=30, kind="image")
SPARSE = "sparse_categorical_crossentropy"


def dry_job(
    layers: list[dict[str, Any]] | None = None,
    loss: str = SPARSE,
    metrics: tuple[str, ...] = (),
    preset: Any = None,
    optimizer: Any = "adam",
    **fit: Any,
) -> JobSpec:
    model = {"preset": preset} if preset is not None else {"layers": layers}
    return JobSpec.model_validate(
        {
            "dataset": {"name": "digits"},
            "model": model,
            "compile": {"loss": loss, "metrics": list(metrics), "optimizer": optimizer},
            "fit": fit,
        }
    )


CONV3 = {"type": "conv2d", "filters": 4, "kernel_size": 3}

DRY_RUN_ERRORS = [
    pytest.param(
        dry_job([FLATTEN, dense(64), CONV3, FLATTEN, dense(10)]),
        DIGITS,
        "layer 2 (conv2d): expected 3-D (C, H, W) input, received (64,)",
        ("model", "layers", 2),
        id="conv2d-after-dense",
    ),
    pytest.param(
        dry_job([FLATTEN, dense(3, "softmax")]),
        DIGITS,
        "output has 3 units but the dataset has 10 classes",
        ("model", "layers", 1),
        id="3-units-10-classes",
    ),
    pytest.param(
        dry_job([dense(3, "softmax")], "categorical_crossentropy"),
        MOONS_INFO,
        "output has 3 units but the dataset has 2 classes (or 1 unit for binary_crossentropy)",
        ("model", "layers", 0),
        id="3-units-2-classes",
    ),
    pytest.param(
        dry_job([FLATTEN, dense(10, "sigmoid")]),
        DIGITS,
        "sparse_categorical_crossentropy needs the last layer's activation to be softmax (or linear logits), "
        "not sigmoid",
        ("model", "layers", 1),
        id="sigmoid-with-sparse-crossentropy",
    ),
    pytest.param(
        dry_job([FLATTEN, dense(10), {"type": "activation", "activation": "sigmoid"}]),
        DIGITS,
        "sparse_categorical_crossentropy needs the last layer's activation to be softmax (or linear logits), "
        "not sigmoid",
        ("model", "layers", 2),
        id="sigmoid-activation-layer-last",
    ),
    pytest.param(
        dry_job([dense(2, "softmax")], "binary_crossentropy"),
        MOONS_INFO,
        "binary_crossentropy needs the last layer's activation to be sigmoid (or linear logits), not softmax",
        ("model", "layers", 0),
        id="softmax-with-binary-crossentropy",
    ),
    pytest.param(
        dry_job([dense(1)], SPARSE),
        SINE_INFO,
        "sparse_categorical_crossentropy needs a classification dataset; this one is regression",
        ("compile", "loss"),
        id="crossentropy-on-regression",
    ),
    pytest.param(
        dry_job([dense(1)], "mse", ("accuracy",)),
        SINE_INFO,
        "accuracy needs a classification dataset; use mae or mse",
        ("compile", "metrics"),
        id="accuracy-on-regression",
    ),
    pytest.param(
        dry_job([dense(2)], "mse"),
        SINE_INFO,
        "output has 2 units but the dataset's target has 1 values",
        ("model", "layers", 0),
        id="regression-output-size",
    ),
    pytest.param(
        dry_job([CONV3, dense(10)]),
        DIGITS,
        "the model's output is (4, 6, 10) per sample; end with flatten and a dense layer",
        ("model", "layers", 1),
        id="output-not-flat",
    ),
    pytest.param(
        dry_job([{"type": "conv2d", "filters": 4, "kernel_size": 9}, FLATTEN, dense(10)]),
        DIGITS,
        "layer 0 (conv2d): window (9, 9) does not fit the input (1, 8, 8) with padding 'valid'",
        ("model", "layers", 0),
        id="kernel-bigger-than-input",
    ),
    pytest.param(
        dry_job([{"type": "maxpool2d", "pool_size": [2, 9]}, FLATTEN, dense(10)]),
        DIGITS,
        "layer 0 (maxpool2d): window (2, 9) does not fit the input (1, 8, 8) with padding 'valid'",
        ("model", "layers", 0),
        id="pool-bigger-than-input",
    ),
    pytest.param(
        dry_job([{"type": "reshape", "target_shape": [5, 13]}, FLATTEN, dense(10)]),
        DIGITS,
        "layer 0 (reshape): cannot reshape (1, 8, 8) (64 values) into (5, 13)",
        ("model", "layers", 0),
        id="reshape-wrong-size",
    ),
    pytest.param(
        dry_job([{"type": "reshape", "target_shape": [-1, 7]}, FLATTEN, dense(10)]),
        DIGITS,
        "layer 0 (reshape): cannot reshape (1, 8, 8) (64 values) into (-1, 7)",
        ("model", "layers", 0),
        id="reshape-indivisible",
    ),
    pytest.param(
        dry_job([{"type": "reshape", "target_shape": [-1, -1]}, FLATTEN, dense(10)]),
        DIGITS,
        "layer 0 (reshape): target_shape (-1, -1) may hold one -1 and otherwise positive sizes",
        ("model", "layers", 0),
        id="reshape-two-wildcards",
    ),
    pytest.param(
        dry_job(
            [FLATTEN, {"type": "embedding", "input_dim": 10, "output_dim": 4}, FLATTEN, dense(10)]
        ),
        DIGITS,
        "layer 1 (embedding): must be the first layer, it takes token ids",
        ("model", "layers", 1),
        id="embedding-not-first",
    ),
    pytest.param(
        dry_job([{"type": "embedding", "input_dim": 10, "output_dim": 4}, FLATTEN, dense(10)]),
        DIGITS,
        "layer 0 (embedding): expected 1-D (L,) token-id input, received (1, 8, 8)",
        ("model", "layers", 0),
        id="embedding-on-image",
    ),
    pytest.param(
        dry_job([{"type": "conv1d", "filters": 4, "kernel_size": 3}, FLATTEN, dense(10)]),
        DIGITS,
        "layer 0 (conv1d): expected 2-D (C, L) input, received (1, 8, 8)",
        ("model", "layers", 0),
        id="conv1d-on-image",
    ),
    pytest.param(
        dry_job([FLATTEN, {"type": "global_avgpool"}, dense(10)]),
        DIGITS,
        "layer 1 (global_avgpool): expected (C, ...) input with spatial axes, received (64,)",
        ("model", "layers", 1),
        id="global-avgpool-on-vector",
    ),
    pytest.param(
        dry_job(preset="shallow_vggnet"),
        MOONS_INFO,
        "shallow_vggnet takes (C, H, W) images; this dataset's samples are (2,)",
        ("model", "preset"),
        id="shallow-vggnet-on-tabular",
    ),
    pytest.param(
        dry_job(preset="alvinn", loss="mse"),
        DIGITS,
        "alvinn takes 30x32 images; this dataset's samples are (1, 8, 8)",
        ("model", "preset"),
        id="alvinn-on-digits",
    ),
    pytest.param(
        dry_job(preset="alvinn", loss="mse"),
        SINE_INFO,
        "alvinn takes 30x32 images; this dataset's samples are (1,)",
        ("model", "preset"),
        id="alvinn-on-tabular",
    ),
]


@pytest.mark.parametrize(("spec", "info", "message", "loc"), DRY_RUN_ERRORS)
def test_dry_run_rejects_spec_with_message_and_loc(spec, info, message, loc):
    with pytest.raises(SpecError) as caught:
        dry_run(spec, info)
    assert caught.value.message == message
    assert str(caught.value) == message
    assert caught.value.loc == loc


DIGITS_MLP_PARAMS = 64 * 512 + 512 + 512 * 10 + 10
OPTIMIZER_SLOTS = [
    pytest.param("sgd", 0, id="sgd"),
    pytest.param({"type": "sgd", "momentum": 0.9}, 1, id="sgd-momentum"),
    pytest.param("adagrad", 1, id="adagrad"),
    pytest.param("rmsprop", 1, id="rmsprop"),
    pytest.param(
        {"type": "rmsprop", "momentum": 0.5, "centered": True}, 3, id="rmsprop-centered-momentum"
    ),
    pytest.param("adam", 2, id="adam"),
    pytest.param({"type": "adam", "amsgrad": True}, 3, id="adam-amsgrad"),
    pytest.param("adamw", 2, id="adamw"),
]


@pytest.mark.parametrize(("optimizer", "slots"), OPTIMIZER_SLOTS)
def test_dry_run_reports_parameters_and_memory(optimizer, slots):
    spec = dry_job(
        [FLATTEN, dense(512, "relu"), dense(10, "softmax")], optimizer=optimizer, batch_size=16
    )
    report = dry_run(spec, DIGITS)
    assert report.parameters == DIGITS_MLP_PARAMS == 38_410
    assert report.output_shape == (10,)
    assert report.layers == [
        {"index": 0, "type": "flatten", "output_shape": [64], "parameters": 0},
        {"index": 1, "type": "dense", "output_shape": [512], "parameters": 64 * 512 + 512},
        {"index": 2, "type": "dense", "output_shape": [10], "parameters": 512 * 10 + 10},
    ]
    # Weights, gradients and optimizer slots, plus twice the activations (input and every layer) of a batch.
    activations = 2 * (64 + 64 + 512 + 10) * 16 * FLOAT_BYTES
    assert (
        report.estimated_memory_bytes == DIGITS_MLP_PARAMS * FLOAT_BYTES * (2 + slots) + activations
    )
    assert report.estimated_memory_bytes > 0
    assert report.as_dict()["parameters"] == DIGITS_MLP_PARAMS


@pytest.mark.parametrize(
    ("spec", "info", "parameters", "output_shape"),
    [
        pytest.param(
            dry_job([{**CONV3, "padding": "same"}, FLATTEN, dense(10)]),
            DIGITS,
            (9 * 4 + 4) + (4 * 64 * 10 + 10),
            (10,),
            id="conv-same",
        ),
        pytest.param(
            dry_job(preset="alvinn", loss="mse"),
            ROAD_INFO,
            960 * 4 + 4 + 4 * 30 + 30,
            (30,),
            id="alvinn",
        ),
        pytest.param(
            dry_job([dense(1, "sigmoid")], "binary_crossentropy"), MOONS_INFO, 3, (1,), id="binary"
        ),
        pytest.param(
            dry_job(
                [{"type": "embedding", "input_dim": 20, "output_dim": 4}, FLATTEN, dense(2)],
                "binary_crossentropy",
            ),
            DataInfo(input_shape=(6,), task="classification", num_classes=2),
            20 * 4 + 24 * 2 + 2,
            (2,),
            id="embedding-2-units-binary",
        ),
    ],
)
def test_dry_run_accepts_valid_spec(spec, info, parameters, output_shape):
    report = dry_run(spec, info)
    assert report.estimated_memory_bytes > 0
    assert report.parameters == sum(layer["parameters"] for layer in report.layers) == parameters
    assert report.output_shape == output_shape


@pytest.mark.parametrize("path", sorted(EXAMPLES_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_dry_run_accepts_example_spec(path):
    spec = JobSpec.model_validate(json.loads(path.read_text()))
    if spec.dataset.name == "mnist":  # the data comes from an optional extra; its shape is known
        info = DataInfo(
            input_shape=(1, 28, 28), task="classification", num_classes=10, kind="image"
        )
    else:
        info = load_dataset(spec.dataset, spec.fit.seed).info()
    report = dry_run(spec, info)
    assert report.parameters > 0
    assert report.estimated_memory_bytes > 0


def test_dry_run_refuses_softmax_hidden_behind_dropout():
    spec = JobSpec.model_validate(
        {
            "dataset": {"name": "digits"},
            "model": {
                "layers": [
                    {"type": "flatten"},
                    {"type": "dense", "units": 10, "activation": "softmax"},
                    {"type": "dropout", "rate": 0.1},
                ]
            },
            "compile": {"loss": "sparse_categorical_crossentropy"},
        }
    )
    info = DataInfo(input_shape=(1, 8, 8), task="classification", num_classes=10, kind="image")
    with pytest.raises(SpecError) as caught:
        dry_run(spec, info)
    assert caught.value.loc == ("model", "layers", 1)
    assert str(caught.value) == (
        "layer 1 (dense): its softmax output reaches the loss through layers that do not change it; "
        "sparse_categorical_crossentropy takes the last layer's activation, so put softmax on the last layer"
    )

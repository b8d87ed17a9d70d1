"""The GAN family in-process: the gaussian_mixture dataset, WGAN-GP and DCGAN steps with their
metrics, exact resume across n_critic, the spec checks before queuing, and both predict operations."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core.datasets import builtin_info, load_builtin
from core.generated import MIXTURE_RADIUS
from core.spec import DatasetSpec, JobSpec
from models.errors import PredictError, SpecError
from models.families import OperationRequest
from models.inference import Predictor
from models.validation import dry_run
from tests.helpers import EXAMPLES
from tests.test_engine import Recorder, weights
from worker.datasource import load_train_data
from worker.training.engine import train
from worker.training.families.gan import frechet_distance

TIMING = {"lr", "epoch_seconds", "samples_per_second"}
BCE = {"loss", "d_loss", "g_loss", "d_accuracy"}
WASSERSTEIN = {"loss", "d_loss", "g_loss", "wasserstein", "gp"}


def raw_example(name: str, **fit: Any) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    raw["fit"] = {**raw["fit"], **fit}
    return raw


def small_mixture(variant: str = "gan", **gan: Any) -> dict[str, Any]:
    """The mixture example on 400 samples: a few steps, for the mechanics rather than the quality."""
    raw = raw_example("gaussian_mixture_gan", epochs=2)
    raw["dataset"]["n_samples"] = 400
    raw["gan"] |= {"variant": variant, **gan}
    if variant == "wgan_gp":  # a critic gives an unbounded score: no sigmoid
        raw["gan"]["discriminator"]["layers"][-1] = {"type": "dense", "units": 1}
    return raw


def trained(raw: dict[str, Any], out: Path) -> tuple[list[dict[str, float]], Predictor]:
    result = train(JobSpec.model_validate(raw), load_train_data(JobSpec.model_validate(raw)), out)
    assert result.status == "completed" and result.model_path is not None
    predictor = Predictor.load(result.model_path)
    assert isinstance(predictor, Predictor)
    return result.history, predictor


def refusal(raw: dict[str, Any]) -> SpecError:
    spec = JobSpec.model_validate(raw)
    with pytest.raises(SpecError) as caught:
        dry_run(spec, builtin_info(spec.dataset))
    return caught.value


def test_gaussian_mixture_has_eight_modes_on_a_circle() -> None:
    ds = load_builtin(DatasetSpec(name="gaussian_mixture", n_samples=800, noise=0.05), seed=3)
    assert (
        ds.input_shape == (2,) and ds.num_classes == 8 and len(ds.x) == 800 and ds.kind == "tabular"
    )
    for k in range(8):
        points = ds.x[ds.y == k]
        angle = 2 * math.pi * k / 8
        np.testing.assert_allclose(
            points.mean(0), MIXTURE_RADIUS * np.array([math.cos(angle), math.sin(angle)]), atol=0.02
        )
        assert points.std(0) == pytest.approx([0.05, 0.05], rel=0.2)
    again = load_builtin(DatasetSpec(name="gaussian_mixture", n_samples=800, noise=0.05), seed=3)
    assert np.array_equal(ds.x, again.x)


def test_frechet_distance_is_zero_for_one_set_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.normal(size=(2000, 3)))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 2.0) == pytest.approx(12.0, rel=1e-6)  # |mu shift|^2 = 3 * 2^2
    b = torch.from_numpy(
        rng.normal(size=(2000, 3)) * 2.0
    )  # covariance 4 I against I: 3 * (1 + 4 - 2 * 2)
    assert frechet_distance(a, b) == pytest.approx(3.0, abs=0.4)


def test_wgan_gp_trains_with_finite_losses_and_resumes_exactly_across_n_critic(
    tmp_path: Path,
) -> None:
    raw = small_mixture(
        "wgan_gp", n_critic=4
    )  # 6 batches an epoch (360 / 64): epoch 2 resumes mid-count
    history, predictor = trained(raw, tmp_path / "a")
    assert (
        set(history[0])
        == WASSERSTEIN
        | {f"val_{k}" for k in WASSERSTEIN - {"gp"}}
        | {"fd", "modes_covered"}
        | TIMING
    )
    assert all(math.isfinite(v) for epoch in history for v in epoch.values())
    assert history[-1]["gp"] > 0 and 0 <= history[-1]["modes_covered"] <= 8
    assert history[-1]["loss"] == pytest.approx(history[-1]["d_loss"] + history[-1]["g_loss"])
    spec = JobSpec.model_validate(raw)
    data = load_train_data(spec)
    stopped = train(spec, data, tmp_path / "b", [Recorder(stop_at_step=7)])  # cancelled in epoch 2
    assert stopped.status == "cancelled" and stopped.epochs_done == 1
    resumed = train(spec, data, tmp_path / "b", resume=True)
    untimed = [
        [{k: v for k, v in epoch.items() if k not in TIMING} for epoch in h]
        for h in (history, resumed.history)
    ]
    assert untimed[0] == untimed[1]
    a, b = weights(tmp_path / "a" / "model.json"), weights(tmp_path / "b" / "model.json")
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    scores = predictor.run("discriminate", OperationRequest(instances=[[2.0, 0.0], [0.0, 0.0]]))[
        "predictions"
    ]
    assert len(scores) == 2 and all(
        math.isfinite(s) for s in scores
    )  # a critic's scores, not probabilities


def test_dcgan_trains_conv_networks_a_few_steps(tmp_path: Path) -> None:
    raw = raw_example("digits_dcgan", epochs=1, batch_size=128)
    history, predictor = trained(raw, tmp_path)
    assert set(history[0]) == BCE | {f"val_{k}" for k in BCE} | {"fd"} | TIMING
    assert all(math.isfinite(v) for v in history[0].values()) and history[0]["fd"] > 0
    assert 0 <= history[0]["val_d_accuracy"] <= 1
    layers = {
        row["type"]
        for row in dry_run(
            JobSpec.model_validate(raw), builtin_info(DatasetSpec(name="digits"))
        ).layers
    }
    assert {"conv2d_transpose", "conv2d"} <= layers
    samples = np.asarray(
        predictor.run("generate", OperationRequest(count=3, seed=5))["predictions"]
    )
    assert (
        samples.shape == (3, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 16
    )  # raw units: 0..16
    again = predictor.run(None, OperationRequest(count=3, seed=5))[
        "predictions"
    ]  # generate is the default
    assert np.array_equal(samples, np.asarray(again))
    probabilities = predictor.run("discriminate", OperationRequest(instances=samples.tolist()))[
        "predictions"
    ]
    assert len(probabilities) == 3 and all(0 <= p <= 1 for p in probabilities)


@pytest.fixture(scope="module")
def cgan(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    return trained(raw_example("digits_cgan", epochs=1), tmp_path_factory.mktemp("cgan"))[1]


def test_cgan_generates_the_labels_asked_for_and_checks_them(cgan: Predictor) -> None:
    out = cgan.run("generate", OperationRequest(labels=[3, 1, 4], seed=0))
    assert np.asarray(out["predictions"]).shape == (3, 1, 8, 8) and out["class_ids"] == [3, 1, 4]
    assert out["classes"] == [str(i) for i in range(10)]
    assert cgan.run("generate", OperationRequest(count=12, seed=0))["class_ids"] == [
        *range(10),
        0,
        1,
    ]
    cases = [
        (
            OperationRequest(labels=[1, 2], count=3),
            "give one label per sample: 2 labels for 3 samples",
            "labels",
        ),
        (OperationRequest(labels=[0, 10]), r"labels must be class ids 0..9; got 10", "labels"),
        (
            OperationRequest(instances=[[0.0] * 64]),
            "generate draws its own latent vectors",
            "instances",
        ),
    ]
    for request, message, field in cases:
        with pytest.raises(PredictError, match=message) as caught:
            cgan.run("generate", request)
        assert caught.value.field == field
    x = np.asarray(out["predictions"])
    scores = cgan.run("discriminate", OperationRequest(instances=x.tolist(), labels=[3, 1, 4]))[
        "predictions"
    ]
    assert len(scores) == 3 and all(0 <= p <= 1 for p in scores)
    with pytest.raises(PredictError, match="give one label per instance") as missing:
        cgan.run("discriminate", OperationRequest(instances=x.tolist()))
    assert missing.value.field == "labels"
    with pytest.raises(PredictError, match="not available to the gan family") as wrong:
        cgan.run("sample", OperationRequest(count=2))
    assert wrong.value.field == "operation"


def test_labels_are_refused_by_an_unconditional_gan(tmp_path: Path) -> None:
    _, predictor = trained(small_mixture(), tmp_path)
    with pytest.raises(
        PredictError, match="labels condition a cgan; this gan model takes none"
    ) as caught:
        predictor.run("generate", OperationRequest(count=2, labels=[0, 1]))
    assert caught.value.field == "labels"
    with pytest.raises(PredictError, match="count and seed are for generate") as count:
        predictor.run("discriminate", OperationRequest(instances=[[0.0, 0.0]], count=1))
    assert count.value.field == "count"


def test_the_dry_run_refuses_networks_that_do_not_fit() -> None:
    raw = small_mixture()
    wide = copy.deepcopy(raw)
    wide["gan"]["generator"]["layers"][-1]["units"] = 3
    error = refusal(wide)
    assert error.loc == ("gan", "generator", "layers", 2)
    assert error.message.startswith(
        "gan.generator: output shape (3,) does not fit the discriminator's input (2,)"
    )
    many = copy.deepcopy(raw)
    many["gan"]["discriminator"]["layers"][-1]["units"] = 4
    error = refusal(many)
    assert (
        error.loc == ("gan", "discriminator", "layers", 4)
        and "must output one score per sample" in error.message
    )
    conv = copy.deepcopy(raw)
    conv["gan"]["discriminator"]["layers"][0] = {"type": "conv2d", "filters": 4, "kernel_size": 3}
    error = refusal(conv)
    assert error.loc == ("gan", "discriminator", "layers", 0)
    assert error.message.startswith("gan.discriminator: layer 0 (conv2d): expected 3-D")
    critic = small_mixture("wgan_gp")
    critic["gan"]["discriminator"]["layers"][-1]["activation"] = "sigmoid"
    error = refusal(critic)
    assert (
        error.loc == ("gan", "discriminator", "layers", 4)
        and "wgan_gp takes the last activation 'linear'" in error.message
    )
    regression = raw_example("gaussian_mixture_gan") | {"dataset": {"name": "sine"}}
    regression["gan"] |= {"variant": "cgan"}
    regression["gan"]["generator"]["layers"][-1]["units"] = 1
    error = refusal(regression)
    assert error.loc == ("gan", "variant") and "needs a classification dataset" in error.message


def test_the_dry_run_reports_both_networks_for_a_cgan() -> None:
    spec = JobSpec.model_validate(raw_example("digits_cgan"))
    report = dry_run(spec, builtin_info(spec.dataset))
    generator = [row for row in report.layers if row["network"] == "generator"]
    discriminator = [row for row in report.layers if row["network"] == "discriminator"]
    assert generator[-1]["output_shape"] == [1, 8, 8] and discriminator[-1]["output_shape"] == [1]
    # the generator reads 32 latent values + a 10-class one-hot; the discriminator 11 channels of 8 x 8
    assert generator[0]["parameters"] == (32 + 10) * 128 + 128
    assert discriminator[1]["parameters"] == 11 * 64 * 256 + 256
    assert (
        report.output_shape == (1, 8, 8) and report.estimated_memory_bytes > 4 * report.parameters
    )

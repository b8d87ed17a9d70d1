"""The autoencoder and VAE families in-process: convergence on digits, the ELBO's terms,
denoising, exact resume, the spec checks before queuing, and every predict operation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core.datasets import load_builtin
from core.preprocessing import split_indices
from core.spec import DatasetSpec, JobSpec
from models.errors import PredictError, SpecError
from models.families import OperationRequest
from models.families.vae import VAE
from models.inference import Predictor
from models.validation import dry_run
from tests.helpers import EXAMPLES, example
from tests.test_engine import Recorder, weights
from worker.datasource import load_train_data
from worker.training.engine import train

TIMING = {"lr", "epoch_seconds", "samples_per_second"}


def raw_example(name: str) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    return raw


def held_out_digits(spec: JobSpec) -> np.ndarray:
    """The validation split in raw units (0..16), as the engine held it out."""
    raw = load_builtin(DatasetSpec(name="digits"), seed=0)
    _, held = split_indices(len(raw.x), spec.validation_split, spec.fit.seed)
    return raw.x[held]


def trained(spec: JobSpec, out: Path) -> tuple[list[dict[str, float]], Predictor]:
    result = train(spec, load_train_data(spec), out)
    assert result.status == "completed" and result.model_path is not None
    predictor = Predictor.load(result.model_path)
    assert isinstance(predictor, Predictor)
    return result.history, predictor


def run(predictor: Predictor, operation: str | None, **fields: Any) -> np.ndarray:
    return np.asarray(predictor.run(operation, OperationRequest(**fields))["predictions"])


def test_autoencoder_reconstruction_falls_below_a_quarter_and_predict_works(tmp_path: Path) -> None:
    spec = example("digits_autoencoder")
    history, predictor = trained(spec, tmp_path)
    assert set(history[0]) == {"loss", "mae", "val_loss", "val_mae"} | TIMING
    assert history[-1]["loss"] < history[0]["loss"] / 4
    assert history[-1]["val_loss"] < history[0]["val_loss"] / 2
    x = held_out_digits(spec)
    reconstructed = run(predictor, None, instances=x.tolist())  # reconstruct is the default
    assert reconstructed.shape == x.shape
    # predict speaks raw units (0..16); the engine's val_loss is the mse on the [0, 1] scale, val_mae in raw units
    assert np.mean((reconstructed - x) ** 2) / 16**2 == pytest.approx(
        history[-1]["val_loss"], rel=1e-4
    )
    assert np.mean(np.abs(reconstructed - x)) == pytest.approx(history[-1]["val_mae"], rel=1e-4)
    codes = run(
        predictor, "encode", instances=x[:5].reshape(5, -1).tolist()
    )  # flat instances are accepted
    assert codes.shape == (5, 8)
    decoded = run(predictor, "decode", instances=codes.tolist())
    np.testing.assert_allclose(decoded, reconstructed[:5], atol=1e-4)
    with pytest.raises(PredictError, match=r"not available to the autoencoder family") as wrong:
        run(predictor, "sample", count=3)
    assert wrong.value.field == "operation"
    with pytest.raises(PredictError, match=r"each instance must have shape \[8\]") as bad:
        run(predictor, "decode", instances=[[0.0] * 3])
    assert bad.value.field == "instances"
    with pytest.raises(PredictError, match="encode takes no `count`") as unused:
        run(predictor, "encode", instances=x[:1].tolist(), count=2)
    assert unused.value.field == "count"


def test_vae_reports_both_elbo_terms_converges_and_samples_in_range(tmp_path: Path) -> None:
    spec = example("digits_vae")
    history, predictor = trained(spec, tmp_path)
    terms = {"loss", "reconstruction", "kl"}
    assert set(history[0]) == terms | {f"val_{t}" for t in terms} | TIMING
    for epoch in history:
        for prefix in ("", "val_"):
            total = epoch[f"{prefix}reconstruction"] + 0.05 * epoch[f"{prefix}kl"]
            assert epoch[f"{prefix}loss"] == pytest.approx(total, rel=1e-5)
    assert history[-1]["reconstruction"] < history[0]["reconstruction"] / 4
    assert history[-1]["val_reconstruction"] < history[0]["val_reconstruction"] / 2
    assert history[-1]["kl"] > 1.0  # the latent carries information: no posterior collapse
    samples = run(predictor, "sample", count=5, seed=3)
    assert samples.shape == (5, 1, 8, 8)
    # the decoder ends in a sigmoid on data scaled by 1/16: raw samples lie in digits' 0..16 by construction
    assert samples.min() >= 0.0 and samples.max() <= 16.0 and samples.std() > 0.5
    np.testing.assert_array_equal(samples, run(predictor, "sample", count=5, seed=3))
    assert not np.array_equal(samples, run(predictor, "sample", count=5, seed=4))
    assert run(predictor, "sample").shape == (8, 1, 8, 8)
    x = held_out_digits(spec)[:6]
    encoded = predictor.run("encode", OperationRequest(instances=x.tolist()))
    means = np.asarray(encoded["predictions"])
    assert means.shape == (6, 8) and np.asarray(encoded["log_variances"]).shape == (6, 8)
    reconstructed = run(predictor, "reconstruct", instances=x.tolist())
    assert reconstructed.shape == x.shape
    np.testing.assert_allclose(
        run(predictor, "decode", instances=means.tolist()), reconstructed, atol=1e-4
    )
    with pytest.raises(PredictError) as wrong:
        run(predictor, "generate")
    assert wrong.value.field == "operation"
    with pytest.raises(PredictError, match="sample takes no `instances`"):
        run(predictor, "sample", instances=x.tolist())


def test_denoising_autoencoder_repairs_masked_inputs_better(tmp_path: Path) -> None:
    """mask_rate corrupts training inputs only: the denoiser's val_loss is on clean inputs (it
    matches predict on them), and it repairs masked digits better than a plain autoencoder."""
    raw = raw_example("digits_autoencoder")
    raw["fit"] |= {"epochs": 12}
    plain_history, plain = trained(JobSpec.model_validate(raw), tmp_path / "plain")
    raw["autoencoder"] |= {"mask_rate": 0.5}
    spec = JobSpec.model_validate(raw)
    history, denoiser = trained(spec, tmp_path / "denoiser")
    x = held_out_digits(spec)
    clean = run(denoiser, "reconstruct", instances=x.tolist())
    assert np.mean((clean - x) ** 2) / 16**2 == pytest.approx(history[-1]["val_loss"], rel=1e-4)
    masked = x * (np.random.default_rng(0).random(x.shape) >= 0.5)
    errors = [
        np.mean((run(p, "reconstruct", instances=masked.tolist()) - x) ** 2)
        for p in (denoiser, plain)
    ]
    assert errors[0] < 0.9 * errors[1]  # about 0.75-0.8 over seeds
    assert (
        history[-1]["loss"] > plain_history[-1]["loss"]
    )  # it trained on the harder, masked inputs


def test_vae_resumes_exactly(tmp_path: Path) -> None:
    """Latent draws come from the engine's per-epoch seeds, so a resumed VAE matches an unbroken one."""
    spec = example("digits_vae", epochs=3)
    data = load_train_data(spec)
    unbroken = train(spec, data, tmp_path / "a")
    steps_per_epoch = 12  # 1438 training samples / 128
    interrupted = train(spec, data, tmp_path / "b", [Recorder(stop_at_step=steps_per_epoch + 1)])
    assert interrupted.status == "cancelled" and interrupted.epochs_done == 1
    resumed = train(spec, data, tmp_path / "b", resume=True)
    assert resumed.model_path is not None and unbroken.model_path is not None
    a, b = weights(unbroken.model_path), weights(resumed.model_path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.history == [
        h | {k: resumed.history[i][k] for k in TIMING - {"lr"}}
        for i, h in enumerate(unbroken.history)
    ]


def spec_with(family: str, **changes: Any) -> JobSpec:
    raw = raw_example(f"digits_{family}")
    section = raw[family]
    for key, value in changes.items():
        if key in ("loss", "metrics"):
            raw["compile"][key] = value
        elif key == "dataset":
            raw["dataset"] = value
        else:
            section[key] = value
    return JobSpec.model_validate(raw)


def refused(spec: JobSpec) -> SpecError:
    with pytest.raises(SpecError) as caught:
        dry_run(spec, load_builtin(spec.dataset, 0).info())
    return caught.value


def test_specs_refused_before_queuing_name_the_field() -> None:
    flat = [{"type": "dense", "units": 64, "activation": "sigmoid"}]
    error = refused(spec_with("autoencoder", decoder=flat))
    assert error.loc == ("autoencoder", "decoder", 0)
    assert error.message == (
        "autoencoder.decoder: layer 0 (dense): output shape (64,) differs from the input shape "
        '(1, 8, 8); end with {"type": "reshape", "target_shape": [1, 8, 8]}'
    )
    small = [{"type": "dense", "units": 16}, {"type": "dense", "units": 32}]
    error = refused(spec_with("vae", decoder=small))
    assert error.loc == ("vae", "decoder", 1)
    assert (
        error.message
        == "vae.decoder: layer 1 (dense): output shape (32,) differs from the input shape (1, 8, 8)"
    )
    error = refused(
        spec_with(
            "autoencoder",
            encoder=[{"type": "flatten"}, {"type": "conv2d", "filters": 4, "kernel_size": 3}],
        )
    )
    assert error.loc == ("autoencoder", "encoder", 1)
    assert error.message.startswith("autoencoder.encoder: layer 1 (conv2d): expected 3-D")
    error = refused(spec_with("vae", encoder=[{"type": "conv2d", "filters": 4, "kernel_size": 3}]))
    assert error.loc == ("vae", "encoder", 0) and "must end in features (1-D)" in error.message
    assert refused(spec_with("vae", loss="sparse_categorical_crossentropy")).loc == (
        "compile",
        "loss",
    )
    assert refused(spec_with("autoencoder", metrics=["accuracy"])).loc == ("compile", "metrics")
    iris = spec_with(
        "vae",
        loss="binary_crossentropy",
        dataset={"name": "iris"},
        decoder=[{"type": "dense", "units": 4, "activation": "sigmoid"}],
    )
    error = refused(iris)
    assert error.loc == ("compile", "loss") and "standardised" in error.message
    relu = [*raw_example("digits_autoencoder")["autoencoder"]["decoder"]]
    relu[1] = relu[1] | {"activation": "relu"}
    error = refused(spec_with("autoencoder", loss="binary_crossentropy", decoder=relu))
    assert (
        error.loc == ("autoencoder", "decoder", 2)
        and "sigmoid (or linear logits), not relu" in error.message
    )


def test_binary_crossentropy_trains_on_logits_past_a_trailing_reshape(tmp_path: Path) -> None:
    raw = raw_example("digits_vae")
    raw["compile"]["loss"] = "binary_crossentropy"
    raw["vae"]["beta"] = 1.0
    raw["fit"] |= {"epochs": 3}
    spec = JobSpec.model_validate(raw)
    report = dry_run(spec, load_builtin(spec.dataset, 0).info())
    assert report.output_shape == (1, 8, 8)
    networks = [(layer["network"], layer["type"]) for layer in report.layers]
    assert networks[2:4] == [("mean", "dense"), ("log_var", "dense")]
    history, predictor = trained(spec, tmp_path)
    module = predictor.model.module
    assert isinstance(module, VAE)
    decoder = module.decoder
    # the dense layer's sigmoid moved past the reshape: the body ends in logits, the loss takes them
    assert decoder.head_name == "sigmoid" and not any(
        isinstance(m, torch.nn.Sigmoid) for m in decoder.body.modules()
    )
    assert history[-1]["loss"] < history[0]["loss"]
    samples = run(predictor, "sample", count=4, seed=0)
    assert samples.shape == (4, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 16

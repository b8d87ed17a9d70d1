"""The autoencoder and VAE families end to end: a spec over HTTP, a real worker, the metric
series from /metrics, every predict operation, a wrong operation and a refused spec (422)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from core.datasets import load_builtin
from core.preprocessing import split_indices
from core.spec import DatasetSpec
from tests.e2e.conftest import Service
from tests.e2e.http import example as spec
from tests.e2e.http import predict, refused, train_and_read

TIMING = {"lr", "epoch_seconds", "samples_per_second"}


def held_out(raw: dict[str, Any]) -> tuple[np.ndarray, float]:
    """Ten held-out digits (raw units) and the mean absolute error of answering the mean digit."""
    digits = load_builtin(DatasetSpec(name="digits"), seed=0)
    _, held = split_indices(len(digits.x), raw["fit"]["validation_split"], raw["fit"]["seed"])
    x = digits.x[held][:10]
    return x, float(np.mean(np.abs(x - digits.x.mean(axis=0))))


def train_over_http(service: Service, raw: dict[str, Any]) -> tuple[str, dict[str, list[float]]]:
    """Submit, wait for success; returns the job id and each metric's per-epoch series."""
    job_id, points = train_and_read(service, raw)
    series: dict[str, list[float]] = {}
    epochs = raw["fit"]["epochs"]
    for name in {p["name"] for p in points}:
        rows = [p for p in points if p["name"] == name]
        assert [p["epoch"] for p in rows] == list(range(1, epochs + 1)), name
        series[name] = [p["value"] for p in rows]
    return job_id, series


def test_autoencoder_over_http(service: Service) -> None:
    raw = spec("digits_autoencoder")
    job_id, series = train_over_http(service, raw)
    assert set(series) == {"loss", "mae", "val_loss", "val_mae"} | TIMING
    assert (
        series["loss"][-1] < series["loss"][0] / 4
        and series["val_loss"][-1] < series["val_loss"][0] / 2
    )
    x, baseline = held_out(raw)
    out = predict(service, job_id, {"instances": x.tolist()})
    assert out["operation"] == "reconstruct" and np.asarray(out["predictions"]).shape == x.shape
    reconstructed = np.asarray(out["predictions"])
    assert np.mean(np.abs(reconstructed - x)) < 0.6 * baseline  # about 0.45 of it
    codes = predict(service, job_id, {"operation": "encode", "instances": x.tolist()})[
        "predictions"
    ]
    assert np.asarray(codes).shape == (10, 8)
    decoded = predict(service, job_id, {"operation": "decode", "instances": codes})
    np.testing.assert_allclose(np.asarray(decoded["predictions"]), reconstructed, atol=1e-3)
    wrong = predict(service, job_id, {"operation": "sample", "count": 2}, status=422)["detail"][0]
    assert (
        wrong["loc"] == ["body", "operation"]
        and "not available to the autoencoder family" in wrong["msg"]
    )
    bad = spec("digits_autoencoder")
    bad["autoencoder"]["decoder"] = bad["autoencoder"]["decoder"][
        :2
    ]  # no reshape back to (1, 8, 8)
    detail = refused(service, bad)
    assert detail["loc"] == ["body", "autoencoder", "decoder", 1]
    assert detail["msg"].startswith(
        "autoencoder.decoder: layer 1 (dense): output shape (64,) differs from the input shape (1, 8, 8)"
    )


def test_vae_over_http(service: Service) -> None:
    raw = spec("digits_vae")
    job_id, series = train_over_http(service, raw)
    terms = {"loss", "reconstruction", "kl"}
    assert set(series) == terms | {f"val_{t}" for t in terms} | TIMING
    beta = raw["vae"]["beta"]
    for loss, rec, kl in zip(series["loss"], series["reconstruction"], series["kl"], strict=True):
        assert loss == pytest.approx(rec + beta * kl, rel=1e-5)
    assert series["reconstruction"][-1] < series["reconstruction"][0] / 4 and series["kl"][-1] > 1.0
    samples = np.asarray(
        predict(service, job_id, {"operation": "sample", "count": 6, "seed": 1})["predictions"]
    )
    assert samples.shape == (6, 1, 8, 8) and samples.min() >= 0.0 and samples.max() <= 16.0
    again = predict(service, job_id, {"operation": "sample", "count": 6, "seed": 1})["predictions"]
    np.testing.assert_array_equal(samples, np.asarray(again))
    x, baseline = held_out(raw)
    encoded = predict(service, job_id, {"operation": "encode", "instances": x.tolist()})
    means = encoded["predictions"]
    assert np.asarray(means).shape == (10, 8) and np.asarray(encoded["log_variances"]).shape == (
        10,
        8,
    )
    reconstructed = np.asarray(
        predict(service, job_id, {"operation": "reconstruct", "instances": x.tolist()})[
            "predictions"
        ]
    )
    assert reconstructed.shape == x.shape and np.mean(np.abs(reconstructed - x)) < 0.6 * baseline
    decoded = predict(service, job_id, {"operation": "decode", "instances": means})["predictions"]
    np.testing.assert_allclose(np.asarray(decoded), reconstructed, atol=1e-3)
    wrong = predict(service, job_id, {"operation": "generate"}, status=422)["detail"][0]
    assert wrong["loc"] == ["body", "operation"] and "choose one of" in wrong["msg"]
    bad = spec("digits_vae")
    bad["vae"]["encoder"] = [
        {"type": "conv2d", "filters": 4, "kernel_size": 3}
    ]  # ends in (4, 6, 6), not features
    detail = refused(service, bad)
    assert (
        detail["loc"] == ["body", "vae", "encoder", 0]
        and "must end in features (1-D)" in detail["msg"]
    )

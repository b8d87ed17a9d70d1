"""The GAN family end to end: the mixture GAN covers the modes and the conditional GAN draws the
digit asked for, judged on samples returned by HTTP generate; metric series from /metrics, both
predict operations, wrong operations and requests (422) and a refused spec (422)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from core.generated import MIXTURE_RADIUS
from tests.e2e.conftest import Service, wait_for
from tests.e2e.http import example as spec
from tests.e2e.http import predict

TIMING = {"lr", "epoch_seconds", "samples_per_second"}
BCE = {"loss", "d_loss", "g_loss", "d_accuracy"}
SAMPLES, MODE_SHARE, MODE_RADIUS = (
    1000,
    0.01,
    3.0,
)  # covered: >= 1% of 1000 samples within 3 stddev of a centre


@pytest.fixture(scope="module")
def jobs(service: Service) -> dict[str, dict[str, Any]]:
    """The mixture GAN, the digits cGAN and a digits classifier to judge it, queued together."""
    with service.client() as client:
        ids = {}
        for name in ("gaussian_mixture_gan", "digits_cgan", "digits_mlp"):
            created = client.post("/v1/jobs", json=spec(name))
            assert created.status_code == 201, created.text
            ids[name] = created.json()["id"]
        done = {
            name: wait_for(client, job_id, ("succeeded", "failed", "cancelled"), timeout=150)
            for name, job_id in ids.items()
        }
    for job in done.values():
        assert job["status"] == "succeeded", job["reason"]
    return done


def series(service: Service, job: dict[str, Any]) -> dict[str, list[float]]:
    """Each metric's per-epoch values, checked to have one row per epoch."""
    with service.client() as client:
        points = client.get(f"/v1/jobs/{job['id']}/metrics").json()["data"]
    out: dict[str, list[float]] = {}
    for name in {p["name"] for p in points} - {"step_loss"}:
        rows = [p for p in points if p["name"] == name]
        assert [p["epoch"] for p in rows] == list(range(1, job["spec"]["fit"]["epochs"] + 1)), name
        out[name] = [p["value"] for p in rows]
    return out


def refusal(service: Service, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
    detail: dict[str, Any] = predict(service, job_id, body, status=422)["detail"][0]
    return detail


def test_gan_covers_the_mixture_modes(service: Service, jobs: dict[str, dict[str, Any]]) -> None:
    job = jobs["gaussian_mixture_gan"]
    metrics = series(service, job)
    assert set(metrics) == BCE | {f"val_{k}" for k in BCE} | {"fd", "modes_covered"} | TIMING
    assert all(math.isfinite(v) for values in metrics.values() for v in values)
    assert metrics["fd"][-1] < metrics["fd"][0] and metrics["modes_covered"][-1] >= 6
    out = predict(service, job["id"], {"count": SAMPLES, "seed": 0})
    assert out["operation"] == "generate" and "class_ids" not in out
    x = np.asarray(out["predictions"])
    assert x.shape == (SAMPLES, 2)
    angles = 2 * np.pi * np.arange(8) / 8
    centres = MIXTURE_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    near = (
        np.linalg.norm(x[:, None, :] - centres[None], axis=2)
        <= MODE_RADIUS * job["spec"]["dataset"]["noise"]
    )
    assert np.sum(near.mean(axis=0) >= MODE_SHARE) >= 6, near.sum(axis=0)
    real = [[MIXTURE_RADIUS, 0.0], [0.0, -MIXTURE_RADIUS]]
    probabilities = predict(service, job["id"], {"operation": "discriminate", "instances": real})[
        "predictions"
    ]
    assert len(probabilities) == 2 and all(0.0 <= p <= 1.0 for p in probabilities)
    labelled = refusal(service, job["id"], {"count": 2, "labels": [0, 1]})
    assert labelled == {
        "loc": ["body", "labels"],
        "type": "invalid",
        "msg": "labels condition a cgan; this gan model takes none",
    }
    wrong = refusal(service, job["id"], {"operation": "reconstruct", "instances": real})
    assert (
        wrong["loc"] == ["body", "operation"] and "not available to the gan family" in wrong["msg"]
    )


def test_cgan_draws_the_digit_asked_for(service: Service, jobs: dict[str, dict[str, Any]]) -> None:
    job, classifier = jobs["digits_cgan"], jobs["digits_mlp"]
    metrics = series(service, job)
    assert set(metrics) == BCE | {f"val_{k}" for k in BCE} | {"fd"} | TIMING
    assert metrics["fd"][-1] < 0.75 * metrics["fd"][0]
    labels = [k for k in range(10) for _ in range(20)]
    out = predict(service, job["id"], {"labels": labels, "seed": 0})
    x = np.asarray(out["predictions"])
    assert (
        out["class_ids"] == labels
        and x.shape == (200, 1, 8, 8)
        and x.min() >= 0.0
        and x.max() <= 16.0
    )
    judged = predict(service, classifier["id"], {"instances": x.tolist()})["class_ids"]
    agreement = float(np.mean(np.asarray(judged) == np.asarray(labels)))
    assert agreement >= 0.7, agreement
    scores = predict(
        service,
        job["id"],
        {"operation": "discriminate", "instances": x[:4].tolist(), "labels": labels[:4]},
    )["predictions"]
    assert len(scores) == 4 and all(0.0 <= p <= 1.0 for p in scores)
    assert refusal(service, job["id"], {"labels": [1, 10]}) == {
        "loc": ["body", "labels"],
        "type": "invalid",
        "msg": "labels must be class ids 0..9; got 10",
    }
    disagree = refusal(service, job["id"], {"labels": [1, 2], "count": 3})
    assert disagree["loc"] == ["body", "labels"] and disagree["msg"].startswith(
        "give one label per sample"
    )
    unlabelled = refusal(
        service, job["id"], {"operation": "discriminate", "instances": x[:1].tolist()}
    )
    assert unlabelled["loc"] == ["body", "labels"]


def test_a_generator_that_does_not_fit_the_data_is_refused(service: Service) -> None:
    bad = spec("gaussian_mixture_gan")
    bad["gan"]["generator"]["layers"][-1]["units"] = 3
    with service.client() as client:
        answer = client.post("/v1/jobs", json=bad)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"][0]
    assert detail["loc"] == ["body", "gan", "generator", "layers", 2]
    assert detail["msg"].startswith(
        "gan.generator: output shape (3,) does not fit the discriminator's input (2,)"
    )

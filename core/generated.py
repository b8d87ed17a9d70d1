"""Generated datasets: deterministic in their seed, no download, any size."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from core.spec import DatasetSpec

Generated = tuple[np.ndarray, np.ndarray, Literal["classification", "regression"], Literal["image", "tabular"]]


def _moons(spec: DatasetSpec, seed: int) -> Generated:
    from sklearn.datasets import make_moons

    x, y = make_moons(spec.n_samples or 1000, noise=0.1 if spec.noise is None else spec.noise, random_state=seed)
    return x.astype(np.float32), y.astype(np.int64), "classification", "tabular"


def _circles(spec: DatasetSpec, seed: int) -> Generated:
    from sklearn.datasets import make_circles

    noise = 0.05 if spec.noise is None else spec.noise
    x, y = make_circles(spec.n_samples or 1000, noise=noise, factor=0.5, random_state=seed)
    return x.astype(np.float32), y.astype(np.int64), "classification", "tabular"


def _blobs(spec: DatasetSpec, seed: int) -> Generated:
    from sklearn.datasets import make_blobs

    std = 1.0 if spec.noise is None else spec.noise
    x, y = make_blobs(spec.n_samples or 1000, centers=spec.classes or 3, cluster_std=std, random_state=seed)
    return x.astype(np.float32), y.astype(np.int64), "classification", "tabular"


def _spirals(spec: DatasetSpec, seed: int) -> Generated:
    """K interleaved arms, the classic hard case for a linear model."""
    rng = np.random.default_rng(seed)
    k, n = spec.classes or 2, spec.n_samples or 1000
    noise = 0.2 if spec.noise is None else spec.noise
    y = np.arange(n) % k
    r = rng.uniform(0.1, 1.0, n)
    theta = r * 4.0 + y * (2 * np.pi / k) + rng.normal(0.0, noise, n)
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    return x.astype(np.float32), y.astype(np.int64), "classification", "tabular"


def _sine(spec: DatasetSpec, seed: int) -> Generated:
    """Noisy-sine regression: y = sin(x) + noise for x in [-pi, pi]."""
    rng = np.random.default_rng(seed)
    n = spec.n_samples or 1000
    x = rng.uniform(-np.pi, np.pi, (n, 1))
    y = np.sin(x) + rng.normal(0.0, 0.1 if spec.noise is None else spec.noise, (n, 1))
    return x.astype(np.float32), y.astype(np.float32), "regression", "tabular"


def _road(spec: DatasetSpec, seed: int) -> Generated:
    """ALVINN-style 30x32 road images; the target is a 30-unit bump at the steering direction.

    Each image shows a bright road band whose centre drifts with the road's curvature; the
    curvature is the direction to steer, coded as a Gaussian bump over 30 output units as in
    Pomerleau's ALVINN.
    """
    rng = np.random.default_rng(seed)
    n = spec.n_samples or 2000
    noise = 0.05 if spec.noise is None else spec.noise
    curvature = rng.uniform(-1.0, 1.0, n)
    offset = rng.uniform(-4.0, 4.0, n)
    rows = np.arange(30)[None, :, None]
    cols = np.arange(32)[None, None, :]
    depth = (29 - rows) / 29.0  # 0 at the bottom row (near the car), 1 at the horizon
    centre = 15.5 + offset[:, None, None] * (1 - depth) + curvature[:, None, None] * 12 * depth**2
    width = 6.0 * (1 - 0.7 * depth)
    road = (np.abs(cols - centre) < width / 2).astype(np.float32)
    x = road + rng.normal(0.0, noise, road.shape)
    units = np.arange(30)[None, :]
    position = (curvature[:, None] + 1) / 2 * 29
    y = np.exp(-((units - position) ** 2) / (2 * 1.5**2))
    return x.astype(np.float32).reshape(n, 1, 30, 32), y.astype(np.float32), "regression", "image"


GENERATORS: dict[str, Callable[[DatasetSpec, int], Generated]] = {
    "moons": _moons, "circles": _circles, "blobs": _blobs, "spirals": _spirals, "sine": _sine, "road": _road,
}  # fmt: skip

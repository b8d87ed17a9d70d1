"""Generated datasets: deterministic in their seed, no download, any size."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from core.spec import DatasetSpec

Generated = tuple[
    np.ndarray, np.ndarray, Literal["classification", "regression"], Literal["image", "tabular"]
]


def _moons(spec: DatasetSpec, seed: int) -> Generated:
    from sklearn.datasets import make_moons

    x, y = make_moons(
        spec.n_samples or 1000, noise=0.1 if spec.noise is None else spec.noise, random_state=seed
    )
    return x.astype(np.float32), y.astype(np.int64), "classification", "tabular"


def _circles(spec: DatasetSpec, seed: int) -> Generated:
    from sklearn.datasets import make_circles

    noise = 0.05 if spec.noise is None else spec.noise
    x, y = make_circles(spec.n_samples or 1000, noise=noise, factor=0.5, random_state=seed)
    return x.astype(np.float32), y.astype(np.int64), "classification", "tabular"


def _blobs(spec: DatasetSpec, seed: int) -> Generated:
    from sklearn.datasets import make_blobs

    std = 1.0 if spec.noise is None else spec.noise
    x, y = make_blobs(
        spec.n_samples or 1000, centers=spec.classes or 3, cluster_std=std, random_state=seed
    )
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


# Sequence sets have a fixed length each: DatasetSpec has no length option, and a fixed shape lets
# builtin_info describe a set without its seed or size.
SINE_LENGTH = 20
CLASSES_LENGTH = 32
TOKENS_LENGTH = 32
TOKENS_VOCABULARY = 32
# The most classes a generated set can tell apart; blobs and spirals take any number.
MAX_CLASSES = {
    "sequence_classes": 8,
    "sequence_tokens": 10,
    "sequence_reverse": 50,
    "sequence_copy": 50,
}


def _sequence_sine(spec: DatasetSpec, seed: int) -> Generated:
    """Forecasting, (20, 1) -> 1: windows of a noisy sine of random frequency (periods of 10 to 42 steps)
    and phase; the target is the series' next value, noise included. `x[:, -1, 0]` is the last value
    seen, the naive forecast a model must beat."""
    rng = np.random.default_rng(seed)
    n = spec.n_samples or 2000
    noise = 0.05 if spec.noise is None else spec.noise
    omega = rng.uniform(0.15, 0.6, (n, 1))  # radians per step
    phase = rng.uniform(0.0, 2 * np.pi, (n, 1))
    steps = np.arange(SINE_LENGTH + 1)[None, :]
    series = np.sin(omega * steps + phase) + rng.normal(0.0, noise, (n, SINE_LENGTH + 1))
    x, y = series[:, :SINE_LENGTH, None], series[:, SINE_LENGTH:]
    return x.astype(np.float32), y.astype(np.float32), "regression", "tabular"


def _sequence_classes(spec: DatasetSpec, seed: int) -> Generated:
    """Sequence classification, (32, 2) -> K classes (default 4, at most 8): a noisy point circling the
    origin, either way round, from a random angle at a random radius; class c turns c + 1 (+-0.3) times
    in the 32 steps, so only its speed, read over time, tells the classes apart."""
    rng = np.random.default_rng(seed)
    k, n = spec.classes or 4, spec.n_samples or 2000
    noise = 0.2 if spec.noise is None else spec.noise
    y = np.arange(n) % k
    turns = (y + 1 + rng.uniform(-0.3, 0.3, n)) * rng.choice([-1.0, 1.0], n)
    start = rng.uniform(0.0, 2 * np.pi, (n, 1))
    angle = start + 2 * np.pi * turns[:, None] * np.arange(CLASSES_LENGTH) / CLASSES_LENGTH
    radius = rng.uniform(0.5, 1.5, (n, 1))
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=2)
    x += rng.normal(0.0, noise, x.shape)
    return x.astype(np.float32), y.astype(np.int64), "classification", "tabular"


def _sequence_tokens(spec: DatasetSpec, seed: int) -> Generated:
    """Token ids, (32,) -> K classes (default 2, at most 10), for an embedding-first model with
    input_dim >= 32: ids 1..K mark the classes, K+1..31 are filler, 0 never occurs (free for padding).
    The class is the marker that occurs most often (3 to 5 times), at least 2 more than any other."""
    rng = np.random.default_rng(seed)
    k, n = spec.classes or 2, spec.n_samples or 2000
    y = np.arange(n) % k
    winner = rng.integers(3, 6, n)
    counts = rng.integers(0, winner[:, None] - 1, (n, k))  # the other markers: 0 .. winner - 2 each
    counts[np.arange(n), y] = winner
    # Lay the markers out in id order, fill the rest of the 32 slots, then shuffle each row.
    ends = counts.cumsum(axis=1)
    marker = (np.arange(TOKENS_LENGTH)[None, :, None] >= ends[:, None, :]).sum(
        axis=2
    )  # k: a filler slot
    filler = rng.integers(k + 1, TOKENS_VOCABULARY, (n, TOKENS_LENGTH))
    tokens = rng.permuted(np.where(marker < k, marker + 1, filler), axis=1)
    return tokens.astype(np.float32), y.astype(np.int64), "classification", "tabular"


PAIRS_LENGTH = 8  # sequence_reverse / sequence_copy
NOISELESS = {
    "sequence_tokens",
    "sequence_reverse",
    "sequence_copy",
}  # sets that would ignore dataset.noise


def _token_pairs(spec: DatasetSpec, seed: int, reverse: bool) -> Generated:
    """Seq2seq, (8,) token ids -> (8,) token ids: uniform ids 0..V-1 (V = `classes`, default 10, at
    most 50); the target is the sequence reversed or copied. The first row holds id V-1, so the
    vocabulary read back as y.max() + 1 is always V whatever the seed and size."""
    rng = np.random.default_rng(seed)
    v, n = spec.classes or 10, spec.n_samples or 2000
    x = rng.integers(0, v, (n, PAIRS_LENGTH))
    x[0, 0] = v - 1
    y = x[:, ::-1] if reverse else x
    return (
        x.astype(np.float32),
        np.ascontiguousarray(y, dtype=np.int64),
        "classification",
        "tabular",
    )


def _sequence_reverse(spec: DatasetSpec, seed: int) -> Generated:
    return _token_pairs(spec, seed, reverse=True)


def _sequence_copy(spec: DatasetSpec, seed: int) -> Generated:
    return _token_pairs(spec, seed, reverse=False)


MIXTURE_RADIUS = 2.0


def _gaussian_mixture(spec: DatasetSpec, seed: int) -> Generated:
    """A GAN's mode-collapse check, (2,) -> K modes: K Gaussians (default 8) of stddev `noise` (default 0.1)
    evenly spaced on a circle of radius 2, centre k at angle 2*pi*k/K; the label is the mode index."""
    rng = np.random.default_rng(seed)
    k, n = spec.classes or 8, spec.n_samples or 2000
    std = 0.1 if spec.noise is None else spec.noise
    y = np.arange(n) % k
    angle = 2 * np.pi * y / k
    x = MIXTURE_RADIUS * np.stack([np.cos(angle), np.sin(angle)], axis=1) + rng.normal(
        0.0, std, (n, 2)
    )
    return x.astype(np.float32), y.astype(np.int64), "classification", "tabular"


GENERATORS: dict[str, Callable[[DatasetSpec, int], Generated]] = {
    "moons": _moons,
    "circles": _circles,
    "blobs": _blobs,
    "spirals": _spirals,
    "sine": _sine,
    "road": _road,
    "gaussian_mixture": _gaussian_mixture,
    "sequence_sine": _sequence_sine,
    "sequence_classes": _sequence_classes,
    "sequence_tokens": _sequence_tokens,
    "sequence_reverse": _sequence_reverse,
    "sequence_copy": _sequence_copy,
}

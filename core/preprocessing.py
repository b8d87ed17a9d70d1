"""Deterministic splits and the preprocessing fitted on the training split.

Preprocessing is an affine map, `(x - offset) * scale`, for features and (for
regression) targets. It is fitted here, saved with the model as JSON, and applied
again by predict, so a user always sends raw units.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.datasets import Dataset, DatasetError, Prepared


def split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held_out): a seeded permutation, so the same seed always holds out the same rows."""
    held = round(n * fraction)
    if fraction > 0 and held == 0:
        held = 1
    if held >= n:
        raise DatasetError(f"a split of {fraction} leaves no training samples out of {n}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[held:]), np.sort(order[:held])


def _affine(offset: Any, scale: Any) -> dict[str, Any]:
    return {
        "offset": np.asarray(offset, dtype=np.float32).tolist(),
        "scale": np.asarray(scale, dtype=np.float32).tolist(),
    }


def apply_affine(x: np.ndarray, affine: dict[str, Any] | None) -> np.ndarray:
    if not affine:
        return x
    return (
        (x - np.asarray(affine["offset"], np.float32)) * np.asarray(affine["scale"], np.float32)
    ).astype(np.float32)


def invert_affine(y: np.ndarray, affine: dict[str, Any] | None) -> np.ndarray:
    if not affine:
        return y
    return (
        y / np.asarray(affine["scale"], np.float32) + np.asarray(affine["offset"], np.float32)
    ).astype(np.float32)


def binarized(x: np.ndarray, threshold: float) -> np.ndarray:
    """`dataset.binarize`: raw values above the threshold -> 1, the rest -> 0."""
    return (x > threshold).astype(np.float32)


def _standardizer(a: np.ndarray) -> dict[str, Any]:
    mean = a.mean(axis=0)
    std = a.std(axis=0)
    return _affine(mean, 1.0 / np.where(std > 1e-8, std, 1.0))


def fit_preprocessing(
    ds: Dataset,
    x_train: np.ndarray,
    y_train: np.ndarray,
    standardize: bool | None,
    tokens: bool = False,
    binarize: float | None = None,
) -> dict[str, Any]:
    """Images scale to [0, 1]; tabular features (and regression targets) standardise by default.
    Binarised features (`binarize`, applied by `prepare` first) are already 0/1: standardised only on request."""
    out: dict[str, Any] = {"features": None, "target": None}
    if tokens:
        return out  # token ids are indices, never rescaled
    if binarize is not None:
        out["binarize"] = binarize  # predict applies it to raw instances before the affine map
    if standardize is True or (standardize is None and ds.kind == "tabular" and binarize is None):
        out["features"] = _standardizer(x_train)
    elif ds.pixel_scale is not None and binarize is None:
        out["features"] = _affine(0.0, ds.pixel_scale)
    if ds.task == "regression" and standardize is not False:
        out["target"] = _standardizer(y_train)
    return out


def prepare(
    ds: Dataset,
    *,
    validation_split: float,
    test_split: float,
    seed: int,
    standardize: bool | None,
    tokens: bool = False,
    binarize: float | None = None,
) -> Prepared:
    x, y = ds.x, ds.y
    x_test, y_test = ds.x_test, ds.y_test
    if test_split > 0:
        if x_test is not None:
            raise DatasetError(f"{ds.name} has its own test split; leave dataset.test_split at 0")
        keep, held = split_indices(len(x), test_split, seed + 1)
        x, y, x_test, y_test = x[keep], y[keep], x[held], y[held]
    x_val = y_val = None
    if validation_split > 0:
        keep, held = split_indices(len(x), validation_split, seed)
        x, y, x_val, y_val = x[keep], y[keep], x[held], y[held]
    if tokens and (
        not np.all(np.isfinite(ds.x)) or np.any(ds.x < 0) or np.any(ds.x != np.round(ds.x))
    ):
        raise DatasetError(
            f"{ds.name}: an embedding takes token ids, whole numbers from 0; this dataset has others"
        )
    binarize = None if tokens else binarize
    if binarize is not None:
        x = binarized(x, binarize)
        x_val = None if x_val is None else binarized(x_val, binarize)
        x_test = None if x_test is None else binarized(x_test, binarize)
    pre = fit_preprocessing(ds, x, y, standardize, tokens, binarize)

    def fx(a: np.ndarray | None) -> np.ndarray | None:
        return (
            None
            if a is None
            else (a.astype(np.int64) if tokens else apply_affine(a, pre["features"]))
        )

    def fy(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None or ds.task == "classification" else apply_affine(a, pre["target"])

    return Prepared(
        ds,
        fx(x),  # type: ignore[arg-type]  # x and y are never None: neither are their transforms
        fy(y) if ds.task == "regression" else y,  # type: ignore[arg-type]
        fx(x_val),
        fy(y_val) if ds.task == "regression" else y_val,
        fx(x_test),
        fy(y_test) if ds.task == "regression" else y_test,
        pre,
    )

"""Inference from a checkpoint: raw instances to the model's inputs with the saved
preprocessing, and model outputs back to raw units. `Predictor` (models.families.predictor)
loads any family's checkpoint and runs its operations; supervised's `predict` is
models.families.supervised's."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from models.checkpoint_meta import Affine, Preprocessing
from models.errors import PredictError
from models.families.predictor import Predictor


def affine(a: np.ndarray, affine: Affine | None, invert: bool = False) -> np.ndarray:
    if not affine:
        return a
    offset, scale = (
        np.asarray(affine["offset"], np.float32),
        np.asarray(affine["scale"], np.float32),
    )
    return a / scale + offset if invert else (a - offset) * scale


def prepare_instances(
    instances: Any,
    shape: tuple[int, ...],
    preprocessing: Preprocessing,
    tokens: bool,
    device: torch.device,
) -> torch.Tensor:
    """Raw instances -> the model's input tensor: shape checked, the saved preprocessing applied."""
    try:
        a = np.asarray(instances, dtype=np.float64)
    except (ValueError, TypeError, OverflowError) as exc:
        raise PredictError(f"instances must be numbers in a regular nested list: {exc}") from exc
    want = f"each instance must have shape {list(shape)} ({math.prod(shape)} values)"
    if a.ndim < 1 or len(a) == 0:
        raise PredictError(f"give a non-empty list of instances; {want}")
    if tuple(a.shape[1:]) != shape:
        if a.ndim == 2 and a.shape[1] == math.prod(shape):
            a = a.reshape(len(a), *shape)  # flat instances are accepted too
        else:
            raise PredictError(f"{want}; received instances of shape {list(a.shape[1:])}")
    if not np.all(np.isfinite(a)):
        raise PredictError("instances must hold finite numbers")
    if tokens:
        return torch.from_numpy(a.astype(np.int64)).to(device)
    if (threshold := preprocessing.get("binarize")) is not None:  # dataset.binarize, as in training
        a = (a > threshold).astype(np.float64)
    x = affine(a.astype(np.float32), preprocessing.get("features"))
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)


def raw_units(x: torch.Tensor, preprocessing: Preprocessing) -> list[Any]:
    """Model-space features (reconstructions, samples) back in the dataset's raw units."""
    out: list[Any] = affine(
        x.float().cpu().numpy(), preprocessing.get("features"), invert=True
    ).tolist()
    return out


__all__ = ["PredictError", "Predictor", "affine", "prepare_instances", "raw_units"]

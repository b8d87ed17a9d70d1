"""The pieces of an export's serving graphs: one small module per exportable operation (built by
models.export_supervised and models.export_generative), each taking the inputs a caller has (raw
instances, latent vectors, noise and labels) and giving what predict answers, with the saved
preprocessing inside it, so the exported file needs nothing of Fitserve.

The wrappers reuse the family's own networks and replay the operation's arithmetic in float32, as
models.inference does: binarize, then `(x - offset) * scale`, and back with `x / scale + offset`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from models.checkpoint_meta import Affine, Preprocessing
from models.families import FamilyModel


class ExportError(ValueError):
    """A model, family or layer that cannot be exported; the message names it (the API's 422)."""


@dataclass(frozen=True)
class Port:
    """One input or output of an exported graph; `shape` is one sample's, the batch axis excluded."""

    name: str
    dtype: str  # "float32" or "int64"
    shape: tuple[int, ...]
    description: str
    high: int | None = None  # an int64 input's values lie in 0..high-1


@dataclass
class Graph:
    operation: str
    module: nn.Module
    inputs: list[Port]
    outputs: list[Port]  # their shapes are filled in by tracing
    # (where, layer specs, the modules that run them): to name the layer when an export fails
    parts: list[tuple[str, list[Any], nn.Sequential]] = field(default_factory=list)


def _tensor(numbers: Any) -> torch.Tensor:
    # float32 as models.inference.affine converts them, so the arithmetic is the served one
    return torch.tensor(numbers, dtype=torch.float32)


class Preprocess(nn.Module):
    """Raw instances -> model space: the dataset's binarize threshold, then the features' affine."""

    threshold: torch.Tensor
    offset: torch.Tensor
    scale: torch.Tensor

    def __init__(self, preprocessing: Preprocessing) -> None:
        super().__init__()
        threshold = preprocessing.get("binarize")
        features = preprocessing.get("features")
        self.binarize = threshold is not None
        self.affine = bool(features)
        self.register_buffer("threshold", _tensor(threshold if threshold is not None else 0.0))
        self.register_buffer("offset", _tensor(features["offset"] if features else 0.0))
        self.register_buffer("scale", _tensor(features["scale"] if features else 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.binarize:
            x = (x > self.threshold).to(torch.float32)
        return (x - self.offset) * self.scale if self.affine else x


class RawUnits(nn.Module):
    """Model space -> raw units (`x / scale + offset`, as models.inference.affine inverts)."""

    offset: torch.Tensor
    scale: torch.Tensor

    def __init__(self, affine: Affine | None) -> None:
        super().__init__()
        self.active = bool(affine)
        self.register_buffer("offset", _tensor(affine["offset"] if affine else 0.0))
        self.register_buffer("scale", _tensor(affine["scale"] if affine else 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.scale + self.offset if self.active else x


def raw_port(model: FamilyModel) -> Port:
    return Port(
        "instances", "float32", model.info.input_shape, "raw instances, the dataset's units"
    )


def samples_port(model: FamilyModel, what: str) -> Port:
    return Port(what, "float32", model.info.input_shape, f"{what}, in the dataset's raw units")

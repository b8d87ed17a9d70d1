"""Spec -> nn.Module, with shapes inferred layer by layer and errors that name the layer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import models.layers  # noqa: F401 - registers the builders
from core.spec import DataInfo, JobSpec, ModelSpec
from models import presets, registry
from models.errors import SpecError
from models.init import init_layer
from models.layers import activation_module
from models.registry import Shape, ShapeError


@dataclass(frozen=True)
class LayerSummary:
    index: int
    type: str
    output_shape: Shape
    parameters: int


class Network(nn.Module):
    """`body` yields the last layer's pre-activation output; `head` is that last activation.

    Keeping them apart lets a softmax + cross-entropy model train on log-probabilities
    (no double softmax), while `forward` returns what Keras' `predict` would.
    """

    def __init__(
        self,
        body: nn.Sequential,
        head_name: str,
        head_alpha: float | None,
        input_shape: Shape,
        output_shape: Shape,
        tokens: bool,
    ) -> None:
        super().__init__()
        self.body = body
        self.head = activation_module(head_name, head_alpha)
        self.head_name = head_name
        self.input_shape = input_shape
        self.output_shape = output_shape
        self.tokens = tokens

    @property
    def vocabulary(self) -> int | None:
        """The embedding's vocabulary size when the network takes token ids."""
        first = self.body[0]
        return first.num_embeddings if isinstance(first, nn.Embedding) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@dataclass
class BuildResult:
    network: Network
    layers: list[Any]
    summary: list[LayerSummary] = field(default_factory=list)

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.network.parameters())


def resolve_layers(model: ModelSpec, info: DataInfo, loss: str) -> list[Any]:
    """The spec's own layers, or the preset's expansion for this dataset."""
    if model.layers is not None:
        return list(model.layers)
    assert model.preset is not None  # noqa: S101 - ModelSpec guarantees one of the two
    return presets.expand(model.preset, info, loss)


def _split_activation(layer: Any, last: bool) -> tuple[str, float | None]:
    """The activation to keep inside the body for this layer ("linear" when it goes to the head)."""
    if last:
        return "linear", None
    return getattr(layer, "activation", "linear"), getattr(layer, "alpha", None)


def build_layers(
    layers: list[Any], input_shape: Shape, default_init: str
) -> tuple[nn.Sequential, Shape, list[LayerSummary]]:
    shape = input_shape
    modules: list[nn.Module] = []
    summary: list[LayerSummary] = []
    for index, layer in enumerate(layers):
        where = ("model", "layers", index)
        if layer.type == "embedding" and index != 0:
            raise SpecError(
                f"layer {index} (embedding): must be the first layer, it takes token ids", where
            )
        try:
            built = registry.get(layer.type).build(layer, shape)
        except ShapeError as exc:
            raise SpecError(f"layer {index} ({layer.type}): {exc}", where) from exc
        if any(d < 1 for d in built.shape):
            raise SpecError(
                f"layer {index} ({layer.type}): output shape {built.shape} is empty", where
            )
        module = built.module
        for sub in module.modules():
            if isinstance(sub, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)):
                init_layer(
                    sub,
                    layer.initializer
                    or ("random_uniform" if layer.type == "embedding" else default_init),
                )
        if layer.type != "activation":
            name, alpha = _split_activation(layer, index == len(layers) - 1)
            if name != "linear":
                module = nn.Sequential(module, activation_module(name, alpha))
        elif index == len(layers) - 1:
            module = nn.Identity()  # the activation becomes the network's head
        modules.append(module)
        summary.append(
            LayerSummary(
                index, layer.type, built.shape, sum(p.numel() for p in module.parameters())
            )
        )
        shape = built.shape
    return nn.Sequential(*modules), shape, summary


def build_network(spec: JobSpec, info: DataInfo) -> BuildResult:
    """Build the module for `info.input_shape`; raises SpecError naming the layer at fault."""
    layers = resolve_layers(spec.supervised_model, info, spec.compiled.loss)
    if math.prod(info.input_shape) < 1:
        raise SpecError(f"the dataset's samples have no values: {info.input_shape}", ("dataset",))
    body, out_shape, summary = build_layers(
        layers, info.input_shape, spec.supervised_model.initializer
    )
    last = layers[-1]
    head_name = getattr(last, "activation", "linear")
    network = Network(
        body,
        head_name,
        getattr(last, "alpha", None),
        info.input_shape,
        out_shape,
        tokens=layers[0].type == "embedding",
    )
    return BuildResult(network, layers, summary)

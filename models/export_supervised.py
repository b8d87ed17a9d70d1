"""The supervised family's export: `predict` as models.families.supervised answers it, the
preprocessing inside (models.export_graphs)."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from models.export_graphs import Graph, Port, Preprocess, RawUnits
from models.families import FamilyModel
from models.network import Network, resolve_layers


class Classify(nn.Module):
    """models.families.supervised._classes: the probabilities the loss implies, and their argmax."""

    def __init__(self, network: Network, pre: nn.Module, mode: str) -> None:
        super().__init__()
        self.network, self.pre, self.mode = network, pre, mode

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.network.logits(self.pre(x)).float()
        if self.mode == "one_logit":
            p = torch.sigmoid(logits)
            probs = torch.cat([1 - p, p], dim=1)
        elif self.mode == "sigmoid":
            probs = torch.sigmoid(logits)
        elif self.mode == "softmax":
            probs = F.softmax(logits, dim=1)
        else:
            probs = self.network.head(logits)
        return probs, probs.argmax(dim=1)


class Regress(nn.Module):
    def __init__(self, network: Network, pre: nn.Module, post: nn.Module, squeeze: bool) -> None:
        super().__init__()
        self.network, self.pre, self.post, self.squeeze = network, pre, post, squeeze

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: torch.Tensor = self.post(
            self.network.head(self.network.logits(self.pre(x)).float())
        )
        return values[:, 0] if self.squeeze else values  # one target answers a value per instance


def _class_mode(loss: str, outputs: int) -> str:
    if outputs == 1:
        return "one_logit"
    if loss == "binary_crossentropy":
        return "sigmoid"
    if loss in ("categorical_crossentropy", "sparse_categorical_crossentropy"):
        return "softmax"
    return "head"


def _instances(model: FamilyModel, network: Network) -> Port:
    if network.tokens:
        vocabulary = network.vocabulary
        return Port(
            "instances",
            "int64",
            model.info.input_shape,
            f"token ids in 0..{vocabulary - 1 if vocabulary else '?'}",
            vocabulary,
        )
    return Port(
        "instances", "float32", model.info.input_shape, "raw instances, the dataset's units"
    )


def supervised_graphs(model: FamilyModel) -> list[Graph]:
    network = cast(Network, model.module)
    pre = Preprocess({} if network.tokens else model.meta.preprocessing)
    layers = resolve_layers(model.spec.supervised_model, model.info, model.spec.compiled.loss)
    parts = [("", layers, network.body)]
    x = _instances(model, network)
    if model.info.task == "classification":
        mode = _class_mode(model.spec.compiled.loss, network.output_shape[-1])
        outputs = [
            Port("probabilities", "float32", (), "one probability per class, in `classes` order"),
            Port("class_ids", "int64", (), "the most probable class's index in `classes`"),
        ]
        return [Graph("predict", Classify(network, pre, mode), [x], outputs, parts)]
    post = RawUnits(model.meta.preprocessing.get("target"))
    squeeze = network.output_shape == (1,)
    out = Port("predictions", "float32", (), "the predicted values, in the target's units")
    return [Graph("predict", Regress(network, pre, post, squeeze), [x], [out], parts)]

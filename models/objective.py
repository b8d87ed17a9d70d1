"""Loss and metrics for a built network, chosen the way a Keras user expects.

A softmax (or linear) last layer with a cross-entropy loss trains on logits with
`cross_entropy`, a sigmoid (or linear) last layer with binary cross-entropy on
`binary_cross_entropy_with_logits`: numerically stable, never a double activation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from core.spec import CompileSpec, DataInfo
from models.errors import SpecError
from models.network import BuildResult

_LOGIT_HEADS = {
    "categorical_crossentropy": ("softmax", "linear"),
    "sparse_categorical_crossentropy": ("softmax", "linear"),
    "binary_crossentropy": ("sigmoid", "linear"),
}
_REGRESSION_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": F.mse_loss,
    "mae": F.l1_loss,
    "huber": F.huber_loss,
}


class Objective:
    """Computes the loss from logits and accumulates per-epoch metric sums without a host sync."""

    def __init__(
        self,
        compile_spec: CompileSpec,
        info: DataInfo,
        units: int,
        head: torch.nn.Module,
        target_scale: torch.Tensor | None = None,
    ) -> None:
        self.loss_name = compile_spec.loss
        self.metrics = list(compile_spec.metrics)
        self.classification = info.task == "classification"
        self.units = units
        self.head = head
        # Regression metrics are reported in the target's raw units, not the standardised ones.
        self.target_scale = target_scale

    def _dense_target(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Class ids -> the float target a non-sparse loss compares against."""
        if not self.classification:
            return y
        if self.units == 1:
            return y.to(like.dtype).unsqueeze(-1)
        return F.one_hot(y, self.units).to(like.dtype)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.loss_name in ("categorical_crossentropy", "sparse_categorical_crossentropy"):
            return F.cross_entropy(logits, y)
        if self.loss_name == "binary_crossentropy":
            return F.binary_cross_entropy_with_logits(logits, self._dense_target(y, logits))
        return _REGRESSION_LOSSES[self.loss_name](self.head(logits), self._dense_target(y, logits))

    def batch_sums(
        self, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Sums over the batch (the loss weighted by batch size), to be added up over an epoch."""
        n = y.shape[0]
        sums = {"loss": loss.detach().float() * n}
        sums.update(self.metric_sums(logits, y))
        return sums

    def metric_sums(self, logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The compiled metrics' sums over the batch (no loss)."""
        sums: dict[str, torch.Tensor] = {}
        logits = logits.detach()
        if "accuracy" in self.metrics:
            predicted = (logits[:, 0] > 0).long() if self.units == 1 else logits.argmax(dim=-1)
            sums["accuracy"] = (predicted == y).sum()
        if "mae" in self.metrics or "mse" in self.metrics:
            diff = self.head(logits).float() - self._dense_target(y, logits).float()
            if self.target_scale is not None:
                diff = diff / self.target_scale
            per_sample = diff[0].numel()
            if "mae" in self.metrics:
                sums["mae"] = diff.abs().sum() / per_sample
            if "mse" in self.metrics:
                sums["mse"] = diff.square().sum() / per_sample
        return sums


_PASS_THROUGH = ("dropout", "flatten", "reshape")


def _refuse_hidden_head(built: BuildResult, loss: str) -> None:
    """A softmax/sigmoid followed only by pass-through layers would reach the loss as 'logits'."""
    for index in range(len(built.layers) - 1, -1, -1):
        layer = built.layers[index]
        activation = getattr(layer, "activation", "linear")
        if activation in ("softmax", "sigmoid"):
            raise SpecError(
                f"layer {index} ({layer.type}): its {activation} output reaches the loss through "
                f"layers that do not change it; {loss} takes the last layer's activation, so put "
                f"{activation} on the last layer",
                ("model", "layers", index),
            )
        if layer.type not in _PASS_THROUGH and not (
            layer.type == "activation" and activation == "linear"
        ):
            return


def check_objective(compile_spec: CompileSpec, info: DataInfo, built: BuildResult) -> int:
    """Refuse a loss, metric or output size that does not fit the dataset; returns the output units."""
    out = built.network.output_shape
    last = ("model", "layers", len(built.layers) - 1)
    loss = compile_spec.loss
    if len(out) != 1:
        raise SpecError(
            f"the model's output is {out} per sample; end with flatten and a dense layer", last
        )
    units = out[0]
    head = built.network.head_name
    if loss in _LOGIT_HEADS:
        if info.task != "classification":
            raise SpecError(
                f"{loss} needs a classification dataset; this one is regression",
                ("compile", "loss"),
            )
        allowed = _LOGIT_HEADS[loss]
        if head not in allowed:
            raise SpecError(
                f"{loss} needs the last layer's activation to be {allowed[0]} (or linear logits), not {head}",
                last,
            )
    if loss in _LOGIT_HEADS and head == "linear":
        _refuse_hidden_head(built, loss)
    classes = info.num_classes or 0
    if info.task == "classification":
        binary_ok = loss == "binary_crossentropy" and classes == 2 and units == 1
        if units != classes and not binary_ok:
            hint = " (or 1 unit for binary_crossentropy)" if classes == 2 else ""
            raise SpecError(
                f"output has {units} units but the dataset has {classes} classes{hint}", last
            )
        if loss in ("categorical_crossentropy", "sparse_categorical_crossentropy") and units < 2:
            raise SpecError(
                f"{loss} needs one output unit per class; use binary_crossentropy for 1 unit", last
            )
    elif units != info.target_dim:
        raise SpecError(
            f"output has {units} units but the dataset's target has {info.target_dim} values", last
        )
    if "accuracy" in compile_spec.metrics and info.task != "classification":
        raise SpecError(
            "accuracy needs a classification dataset; use mae or mse", ("compile", "metrics")
        )
    return units

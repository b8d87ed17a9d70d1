"""Restricted Boltzmann machines: one layer of binary hidden units over Bernoulli (binary or
[0, 1]) or unit-variance Gaussian visible units, trained by contrastive divergence (CD-k).

The CD statistics are written into each parameter's `.grad` (as the gradient of the negative
log-likelihood's CD estimate), so a plain SGD optimizer with momentum takes the step and the
engine checkpoints its momentum like any other optimizer. The DBN family stacks these.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.spec import DataInfo, DatasetSpec, JobSpec, RBMJob, as_family
from core.spec.families import RBMSpec
from models.errors import PredictError, SpecError
from models.families import FamilyModel, Operation, OperationRequest, refuse_unused
from models.inference import prepare_instances, raw_units
from models.validation import FLOAT_BYTES, DryRun

INIT_STD = (
    0.01  # Hinton's "practical guide": small Gaussian weights, so no hidden unit starts saturated
)


class RBM(nn.Module):
    """Energy E(v, h) = -h.W.v - c.h + (bernoulli: -b.v | gaussian: |v - b|^2 / 2)."""

    def __init__(self, visible: int, hidden: int, gaussian: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(hidden, visible) * INIT_STD)
        self.visible_bias = nn.Parameter(torch.zeros(visible))
        self.hidden_bias = nn.Parameter(torch.zeros(hidden))
        self.gaussian = gaussian

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        """p(h = 1 | v); differentiable, so a DBN fine-tunes through it as a sigmoid layer."""
        return torch.sigmoid(F.linear(v, self.weight, self.hidden_bias))

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """E[v | h]: probabilities for Bernoulli units, the Gaussian's mean otherwise."""
        pre = F.linear(h, self.weight.t(), self.visible_bias)
        return pre if self.gaussian else torch.sigmoid(pre)

    def reconstruct(self, v: torch.Tensor) -> torch.Tensor:
        """One mean-field step v -> p(h | v) -> E[v | h] (no sampling, so it is deterministic)."""
        return self.visible_mean(self.hidden_probs(v))

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = -log sum_h exp(-E(v, h)) per sample; lower means more probable."""
        hidden_term = F.softplus(F.linear(v, self.weight, self.hidden_bias)).sum(dim=1)
        if self.gaussian:
            return 0.5 * (v - self.visible_bias).square().sum(dim=1) - hidden_term
        return -(v @ self.visible_bias) - hidden_term

    @torch.no_grad()
    def contrastive_divergence(self, v0: torch.Tensor, k: int, weight_decay: float) -> torch.Tensor:
        """Write the CD-k estimate of -d log p(v0) / d theta into `.grad`; returns p(h | v0).

        Positive phase on the data, then k Gibbs steps from a sampled h0. Visible units take their
        means rather than samples and the last hidden step its probabilities, as the practical
        guide advises: less sampling noise in the statistics at no cost in bias worth having.
        """
        ph0 = self.hidden_probs(v0)
        h = torch.bernoulli(ph0)
        vk, phk = v0, ph0
        for step in range(k):
            vk = self.visible_mean(h)
            phk = self.hidden_probs(vk)
            if step < k - 1:
                h = torch.bernoulli(phk)
        n = len(v0)
        # <v h>_model - <v h>_data: SGD *descends*, so this is the negative of the CD ascent direction.
        self.weight.grad = (phk.t() @ vk - ph0.t() @ v0) / n + weight_decay * self.weight
        self.visible_bias.grad = (vk - v0).mean(dim=0)
        self.hidden_bias.grad = (phk - ph0).mean(dim=0)
        return ph0


def cd_rate(learning_rate: float | None, visible: str) -> float:
    """The spec's CD step size, or its default: Gaussian units take steps an order smaller."""
    if learning_rate is not None:
        return learning_rate
    return 0.01 if visible == "gaussian" else 0.1


def flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(len(x), -1)


def section(spec: JobSpec) -> RBMSpec:
    return as_family(spec, RBMJob).rbm


def build(spec: JobSpec, info: DataInfo) -> RBM:
    s = section(spec)
    return RBM(math.prod(info.input_shape), s.hidden_units, gaussian=s.visible == "gaussian")


# -- what the data must look like --------------------------------------------------------------
def standardized(dataset: DatasetSpec, info: DataInfo) -> bool:
    """Whether core.preprocessing standardises the features (its defaults, restated)."""
    return dataset.standardize is True or (
        dataset.standardize is None and info.kind == "tabular" and dataset.binarize is None
    )


def check_visible(visible: str, dataset: DatasetSpec, info: DataInfo, where: str) -> None:
    """Refuse visible units that do not fit the features, before queuing.

    Bernoulli units model values in [0, 1]: binarised data, or images scaled to [0, 1] whose
    grey levels are read as probabilities. Standardised features and the built-in tabular sets
    are real-valued; an uploaded table's range is known only to the worker, which checks it.
    Gaussian units have unit variance, so they need standardised features.
    """
    hint = "a threshold in raw units, e.g. 8 for digits' 0-16 pixels"
    if visible == "gaussian":
        if not standardized(dataset, info):
            raise SpecError(
                "gaussian visible units assume unit-variance features: set dataset.standardize to true, "
                "or keep visible 'bernoulli' for binary data",
                ("dataset", "standardize"),
            )
        return
    if standardized(dataset, info):
        raise SpecError(
            f"bernoulli visible units take binary data (or probabilities in [0, 1]), but these features "
            f"are standardised real values: binarise them with dataset.binarize ({hint}), or set "
            f"{where}.visible to 'gaussian'",
            (where, "visible"),
        )
    if dataset.binarize is None and info.kind == "tabular" and dataset.name is not None:
        raise SpecError(
            f"bernoulli visible units take binary data (or probabilities in [0, 1]), but {dataset.name}'s "
            f"features are real values: binarise them with dataset.binarize ({hint}), or set "
            f"{where}.visible to 'gaussian' with standardised features",
            (where, "visible"),
        )


def check_range(x: torch.Tensor, visible: str, where: str) -> str | None:
    """The worker's check of the real training features (the dry run sees no values)."""
    if visible != "bernoulli" or len(x) == 0:
        return None
    low, high = float(x.min()), float(x.max())
    if low >= 0.0 and high <= 1.0:
        return None
    return (
        f"bernoulli visible units take values in [0, 1], but the training features span [{low:.4g}, {high:.4g}]: "
        f"set dataset.binarize to a threshold in raw units, or {where}.visible to 'gaussian' with "
        "dataset.standardize true"
    )


def visible_bias_from(x: torch.Tensor, gaussian: bool) -> torch.Tensor:
    """The practical guide's start: b_i = log(p_i / (1 - p_i)) (Bernoulli), the mean (Gaussian)."""
    mean = flat(x).float().mean(dim=0)
    if gaussian:
        return mean
    p = mean.clamp(1e-3, 1 - 1e-3)
    return torch.log(p / (1 - p))


def memory(parameters: int, units: int, batch_size: int, k: int) -> int:
    """Weights, CD statistics (the gradient) and momentum, plus the chain's states per sample."""
    return int(parameters * FLOAT_BYTES * 3 + batch_size * units * FLOAT_BYTES * (2 * k + 2))


def dry_run(spec: JobSpec, info: DataInfo) -> DryRun:
    s = section(spec)
    check_visible(s.visible, spec.dataset, info, "rbm")
    rbm = build(spec, info)
    v = torch.rand(2, rbm.weight.shape[1])
    rbm.contrastive_divergence(
        v if s.visible == "bernoulli" else torch.randn_like(v), s.k, s.weight_decay
    )
    parameters = sum(p.numel() for p in rbm.parameters())
    layers = [
        {"index": 0, "type": "rbm", "output_shape": [s.hidden_units], "parameters": parameters}
    ]
    units = rbm.weight.shape[0] + rbm.weight.shape[1]
    return DryRun(
        parameters, (s.hidden_units,), layers, memory(parameters, units, spec.fit.batch_size, s.k)
    )


# -- predict -----------------------------------------------------------------------------------
def inputs(model: FamilyModel, request: OperationRequest, operation: str) -> torch.Tensor:
    refuse_unused(request, operation, ("instances",))
    if request.instances is None:
        raise PredictError(f"give `instances` to {operation}", "instances")
    x = prepare_instances(
        request.instances, model.info.input_shape, model.meta.preprocessing, False, model.device
    )
    return flat(x)


def transform(model: FamilyModel, request: OperationRequest) -> dict[str, Any]:
    """Instances -> the hidden units' probabilities p(h = 1 | v): features for another model."""
    rbm: RBM = model.module  # type: ignore[assignment]
    return {"predictions": rbm.hidden_probs(inputs(model, request, "transform")).cpu().tolist()}


def reconstruct(model: FamilyModel, request: OperationRequest) -> dict[str, Any]:
    """Instances -> E[v | p(h | v)], one mean-field Gibbs step, in the instances' shape and raw units."""
    rbm: RBM = model.module  # type: ignore[assignment]
    v = rbm.reconstruct(inputs(model, request, "reconstruct"))
    return {
        "predictions": raw_units(
            v.reshape(len(v), *model.info.input_shape), model.meta.preprocessing
        )
    }


OPERATIONS: dict[str, Operation] = {"transform": transform, "reconstruct": reconstruct}

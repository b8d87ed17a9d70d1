"""The rbm family's training: contrastive divergence (CD-k) on the training features; no backprop.

Each batch writes the CD statistics into the parameters' `.grad` and an SGD optimizer with
`rbm.momentum` takes the step, so the engine checkpoints the momentum and resume is exact.
Metrics: `loss` is the reconstruction error (the mean squared error between v and its one-step
mean-field reconstruction), `free_energy` the mean free energy of the data; with a validation
split, `val_` twins and `free_energy_gap` (validation minus training free energy at the same
weights: it grows when the model overfits, as Hinton's practical guide suggests watching).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from core.spec import JobSpec
from models.families.rbm import (
    RBM,
    build,
    cd_rate,
    check_range,
    check_visible,
    flat,
    section,
    visible_bias_from,
)
from worker.training.data import TrainData, TrainingFailed
from worker.training.task import Task

EVAL_CHUNK = 4096


def cd_optimizer(
    rbm: RBM, learning_rate: float | None, momentum: float, visible: str
) -> torch.optim.SGD:
    """Weight decay is folded into the weights' CD gradient, so the biases are not decayed."""
    return torch.optim.SGD(rbm.parameters(), lr=cd_rate(learning_rate, visible), momentum=momentum)


def check_finite(error: float, where: str) -> None:
    """Say what to lower in the family's terms, before the engine's generic message."""
    if not math.isfinite(error):
        raise TrainingFailed(
            f"the reconstruction error became {error}: CD diverged; lower {where}.learning_rate "
            "(gaussian visible units usually need 0.01 or less)"
        )


def start_from_data(rbm: RBM, x: torch.Tensor) -> None:
    with torch.no_grad():
        rbm.visible_bias.copy_(visible_bias_from(x, rbm.gaussian))


@torch.no_grad()
def reconstruction_sums(rbm: RBM, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum over samples of the per-sample mean squared reconstruction error, sum of free energies)."""
    error = torch.zeros((), device=v.device)
    energy = torch.zeros((), device=v.device)
    for start in range(0, len(v), EVAL_CHUNK):
        chunk = v[start : start + EVAL_CHUNK]
        error += (rbm.reconstruct(chunk) - chunk).square().mean(dim=1).sum()
        energy += rbm.free_energy(chunk).sum()
    return error, energy


class RBMTask(Task):
    model: RBM

    def __init__(self, spec: JobSpec, data: TrainData, device: torch.device) -> None:
        super().__init__(spec, data, device)
        self.section = s = section(spec)
        check_visible(s.visible, spec.dataset, data.info, "rbm")
        problem = check_range(data.x_train, s.visible, "rbm")
        if problem is not None:
            raise TrainingFailed(problem)
        self.model = build(spec, data.info).to(device)
        start_from_data(self.model, data.x_train)
        self.optimizers = [cd_optimizer(self.model, s.learning_rate, s.momentum, s.visible)]
        # A fixed training subset as large as the validation split, for the free-energy gap.
        n_val = 0 if data.x_val is None else len(data.x_val)
        self.train_probe = flat(data.x_train[:n_val]).to(device) if n_val else None
        self.val = None if data.x_val is None else flat(data.x_val).to(device)
        self.on_host = device.type == "cpu"

    def train_batch(self, xb: torch.Tensor, yb: torch.Tensor, epoch: int) -> torch.Tensor:
        v0 = flat(xb)
        ph0 = self.model.contrastive_divergence(v0, self.section.k, self.section.weight_decay)
        with (
            torch.no_grad()
        ):  # the figures of the weights the batch was scored with, before the step
            loss = F.mse_loss(self.model.visible_mean(ph0), v0)
            energy = self.model.free_energy(v0).sum()
        if (
            self.on_host
        ):  # the engine reads every CPU step's loss anyway; a GPU is checked per epoch
            check_finite(loss.item(), "rbm")
        self.optimizers[0].step()
        self.sums.add(loss=loss * len(v0), free_energy=energy)
        return loss

    def epoch_metrics(self, seen: int) -> dict[str, float]:
        metrics = super().epoch_metrics(seen)
        check_finite(metrics["loss"], "rbm")
        return metrics

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        error, energy = reconstruction_sums(self.model, flat(x))
        return {"loss": error.item() / len(x), "free_energy": energy.item() / len(x)}

    def epoch_end(self, epoch: int) -> dict[str, float]:
        if self.val is None or self.train_probe is None:
            return {}
        val = reconstruction_sums(self.model, self.val)[1] / len(self.val)
        train = reconstruction_sums(self.model, self.train_probe)[1] / len(self.train_probe)
        return {"free_energy_gap": (val - train).item()}

    def describe(self) -> dict[str, Any]:
        s = self.section
        return {
            "visible": s.visible,
            "visible_units": self.model.weight.shape[1],
            "hidden_units": s.hidden_units,
        }


TASK = RBMTask

"""The dbn family's training: greedy layer-wise CD pretraining, then supervised fine-tuning.

The engine's epochs are shared out by `models.families.dbn.phase_of`: the first
`pretrain_epochs` x layers train one RBM each in turn (CD-k on the hidden probabilities of
the RBMs below, with their own SGD + momentum), the rest fine-tune the stack as a sigmoid MLP
with a softmax output and `compile`'s optimizer. Every optimizer is in `optimizers` from the
start (the fine-tuning one first: `fit.lr_schedule` drives its rate and scales the others by
the same factor), so a checkpoint in either phase resumes exactly.

Metrics: pretraining epochs report `loss` (the RBM's reconstruction error), `phase` 0 and
`layer` (1-based); fine-tuning epochs report `loss` (the cross-entropy), `compile.metrics`
and `phase` 1. Validation twins (`val_`) follow the same phase.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.spec import JobSpec
from models.families.dbn import DBN, Phase, build, check, phase_of, pretrain_epochs, section
from models.families.rbm import check_range
from models.objective import Objective
from worker.training.data import TrainData, TrainingFailed
from worker.training.families.rbm import (
    EVAL_CHUNK,
    cd_optimizer,
    check_finite,
    reconstruction_sums,
    start_from_data,
)
from worker.training.optim import backprop_step, make_optimizer, penalty, with_penalty
from worker.training.task import Task


class DBNTask(Task):
    model: DBN
    eval_batch = EVAL_CHUNK

    def __init__(self, spec: JobSpec, data: TrainData, device: torch.device) -> None:
        super().__init__(spec, data, device)
        self.section = s = section(spec)
        self.compile = spec.compiled
        check(spec, data.info)
        problem = check_range(data.x_train, s.visible, "dbn")
        if problem is not None:
            raise TrainingFailed(problem)
        self.model = build(spec, data.info).to(device)
        rbms = self.model.stack
        start_from_data(rbms[0], data.x_train)
        # Fine-tuning trains what the MLP uses: weights, hidden biases and the output layer.
        tuned = [p for rbm in rbms for p in (rbm.weight, rbm.hidden_bias)] + list(
            self.model.output.parameters()
        )
        self.kernels = [rbm.weight for rbm in rbms] + [self.model.output.weight]
        # Only the first RBM sees the data; the ones above see probabilities, so bernoulli's rate.
        self.pretrainers = [
            cd_optimizer(rbm, s.learning_rate, s.momentum, s.visible if i == 0 else "bernoulli")
            for i, rbm in enumerate(rbms)
        ]
        self.optimizers = [make_optimizer(self.compile, tuned), *self.pretrainers]
        self.objective = Objective(
            self.compile, data.info, self.model.output.out_features, nn.Softmax(dim=1)
        )
        self.phase: Phase
        self.phase, self.layer = phase_of(spec, 1)
        self.on_host = device.type == "cpu"

    def start_epoch(self, epoch: int) -> None:
        self.phase, self.layer = phase_of(self.spec, epoch)
        if (
            self.phase != "pretrain"
        ):  # CD wrote .grad of parameters fine-tuning never steps: keep them
            for (
                p
            ) in self.model.parameters():  # out of gradient clipping (and a resumed run has none)
                p.grad = None

    def train_batch(self, xb: torch.Tensor, yb: torch.Tensor, epoch: int) -> torch.Tensor:
        if self.phase == "pretrain":
            return self._pretrain(xb)
        c, optimizer = self.compile, self.optimizers[0]
        logits = self.model.logits(xb)
        loss = self.objective.loss(logits, yb)
        extra = penalty(self.kernels, c.regularization.l1, c.regularization.l2)
        if extra is not None:
            loss = loss + extra
        backprop_step(loss, optimizer, self.model.parameters(), c)
        self.sums.add(**self.objective.batch_sums(logits, yb, loss))
        return loss

    def _pretrain(self, xb: torch.Tensor) -> torch.Tensor:
        rbm = self.model.stack[self.layer]
        v0 = self.model.below(xb, self.layer)
        ph0 = rbm.contrastive_divergence(v0, self.section.k, self.section.weight_decay)
        with torch.no_grad():
            loss = F.mse_loss(rbm.visible_mean(ph0), v0)
        if (
            self.on_host
        ):  # as the rbm family: name the pretraining rate before the engine's generic message
            check_finite(loss.item(), "dbn")
        self.pretrainers[self.layer].step()
        self.sums.add(loss=loss * len(v0))
        return loss

    def _phase_figures(self) -> dict[str, float]:
        if self.phase == "pretrain":
            return {"phase": 0.0, "layer": float(self.layer + 1)}
        return {"phase": 1.0}

    def epoch_metrics(self, seen: int) -> dict[str, float]:
        return super().epoch_metrics(seen) | self._phase_figures()

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        if self.phase == "pretrain":
            error, _ = reconstruction_sums(
                self.model.stack[self.layer], self.model.below(x, self.layer)
            )
            return {"loss": error.item() / len(x)}
        metrics = self.evaluate_in_batches(self._held_out_sums, x, y)
        return with_penalty(metrics, self.kernels, self.compile.regularization)

    def _held_out_sums(self, xb: torch.Tensor, yb: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.model.logits(xb)
        return self.objective.batch_sums(logits, yb, self.objective.loss(logits, yb))

    def extra_state(self) -> dict[str, Any]:
        """The phase, for a resume that has no epoch left to run (the test evaluation follows)."""
        return {"phase": self.phase, "layer": self.layer}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "phase" in state:
            self.phase, self.layer = state["phase"], int(state["layer"])

    def describe(self) -> dict[str, Any]:
        s = self.section
        pretraining = pretrain_epochs(self.spec)
        return {
            "visible": s.visible,
            "hidden_units": list(s.hidden_units),
            "pretrain_epochs": pretraining,
            "fine_tune_epochs": self.spec.fit.epochs - pretraining,
        }


TASK = DBNTask

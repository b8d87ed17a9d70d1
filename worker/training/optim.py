"""Optimizers, learning-rate schedules, regularization and the monitors that watch metrics."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from core.spec import (
    CompileSpec,
    CosineSchedule,
    EarlyStopping,
    FitSpec,
    PlateauSchedule,
    Regularization,
    StepSchedule,
)
from models.checkpoint_meta import Monitor, ScheduleState


def make_optimizer(spec: CompileSpec, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    o = spec.optimizer
    if o.type == "sgd":
        return torch.optim.SGD(
            params,
            lr=o.learning_rate,
            momentum=o.momentum,
            nesterov=o.nesterov,
            weight_decay=o.weight_decay,
        )
    if o.type == "adagrad":
        return torch.optim.Adagrad(
            params,
            lr=o.learning_rate,
            initial_accumulator_value=o.initial_accumulator_value,
            eps=o.epsilon,
            weight_decay=o.weight_decay,
        )
    if o.type == "rmsprop":
        return torch.optim.RMSprop(
            params,
            lr=o.learning_rate,
            alpha=o.rho,
            eps=o.epsilon,
            momentum=o.momentum,
            centered=o.centered,
            weight_decay=o.weight_decay,
        )
    optimizer_class = torch.optim.Adam if o.type == "adam" else torch.optim.AdamW
    return optimizer_class(
        params,
        lr=o.learning_rate,
        betas=(o.beta_1, o.beta_2),
        eps=o.epsilon,
        amsgrad=o.amsgrad,
        weight_decay=o.weight_decay,
    )


def kernels(model: nn.Module) -> list[torch.Tensor]:
    """The weights a Keras kernel_regularizer would penalise: no biases, no norm scales, and of a
    recurrent layer its input kernels only (Keras regularises recurrent kernels separately)."""
    found: list[torch.Tensor] = []
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)):
            found.append(module.weight)
        elif isinstance(module, nn.RNNBase):
            found += [w for name, w in module.named_parameters() if name.startswith("weight_ih")]
        elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            found.append(module.in_proj_weight)  # its out_proj is an nn.Linear, found on its own
    return found


def backprop_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    parameters: Iterable[nn.Parameter],
    spec: CompileSpec,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Backward, clip as `compile` says, step: one update, with fp16 loss scaling when a scaler is given."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if spec.clip_grad_value is not None or spec.clip_grad_norm is not None:
        params = list(parameters)
        if spec.clip_grad_value is not None:
            torch.nn.utils.clip_grad_value_(params, spec.clip_grad_value)
        if spec.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, spec.clip_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def with_penalty(
    metrics: dict[str, float], weights: list[torch.Tensor], regularization: Regularization
) -> dict[str, float]:
    """Held-out means with the kernel penalty added to the loss, as Keras reports it."""
    extra = penalty(weights, regularization.l1, regularization.l2)
    metrics["loss"] += 0.0 if extra is None else extra.item()
    return metrics


def penalty(weights: list[torch.Tensor], l1: float, l2: float) -> torch.Tensor | None:
    if not weights or (l1 == 0 and l2 == 0):
        return None
    total = torch.zeros((), device=weights[0].device)
    for w in weights:
        if l1:
            total = total + l1 * w.abs().sum()
        if l2:
            total = total + l2 * w.square().sum()
    return total


def better(mode: str, monitor: str, current: float, best: float | None, min_delta: float) -> bool:
    if best is None:
        return True
    maximise = mode == "max" or (mode == "auto" and "acc" in monitor)
    return current > best + min_delta if maximise else current < best - min_delta


@dataclass
class MonitorState:
    """What early stopping and reduce-on-plateau remember between epochs (saved in checkpoints)."""

    best: float | None = None
    best_epoch: int = 0
    wait: int = 0

    def update(self, mode: str, monitor: str, value: float, min_delta: float, epoch: int) -> bool:
        if better(mode, monitor, value, self.best, min_delta):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return True
        self.wait += 1
        return False

    def snapshot(self) -> Monitor:
        return Monitor(**asdict(self))

    @classmethod
    def restore(cls, snapshot: Monitor) -> MonitorState:
        return cls(**snapshot.model_dump())


class Schedule:
    """The learning rate for each epoch: a pure function of the epoch for step and cosine,
    a monitor for reduce-on-plateau."""

    def __init__(self, fit: FitSpec, base_lr: float) -> None:
        self.spec = fit.lr_schedule
        self.epochs = fit.epochs
        self.base_lr = base_lr
        self.lr = base_lr
        self.plateau = MonitorState()

    def lr_for_epoch(self, epoch: int) -> float:
        s = self.spec
        if isinstance(s, StepSchedule):
            return self.base_lr * s.gamma ** (epoch // s.step_size)
        if isinstance(s, CosineSchedule):
            t_max = s.t_max or self.epochs
            progress = min(epoch, t_max) / t_max
            return s.min_lr + (self.base_lr - s.min_lr) * (1 + math.cos(math.pi * progress)) / 2
        return self.lr

    def epoch_end(self, metrics: dict[str, float], epoch: int) -> None:
        s = self.spec
        if not isinstance(s, PlateauSchedule):
            return
        self.plateau.update("auto", s.monitor, metrics[s.monitor], s.min_delta, epoch)
        if self.plateau.wait >= s.patience and self.plateau.wait > 0:
            self.lr = max(self.lr * s.factor, s.min_lr)
            self.plateau.wait = 0

    def state(self) -> ScheduleState:
        return ScheduleState(lr=self.lr, plateau=self.plateau.snapshot())

    def load(self, state: ScheduleState) -> None:
        self.lr = state.lr
        self.plateau = MonitorState.restore(state.plateau)


class Stopper:
    def __init__(self, spec: EarlyStopping | None) -> None:
        self.spec = spec
        self.state = MonitorState()

    def epoch_end(self, metrics: dict[str, float], epoch: int) -> tuple[bool, bool]:
        """(improved, stop)."""
        if self.spec is None:
            return False, False
        s = self.spec
        improved = self.state.update(s.mode, s.monitor, metrics[s.monitor], s.min_delta, epoch)
        return improved, not improved and self.state.wait >= s.patience

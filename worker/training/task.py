"""What a model family plugs into the engine: its modules, optimizers, one training step and
its evaluation. The engine owns everything else (batches, epochs, schedules, early stopping,
checkpoints, resume, callbacks), so every family streams metrics and resumes the same way.

A task keeps the epoch's running sums itself: the supervised task folds its metrics in groups
on the CPU and keeps them on the device on a GPU; a GAN sums two losses. `epoch_metrics` hands
the epoch's means over and starts the next epoch's sums.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from core.families import REGISTRY
from core.spec import JobSpec
from worker.training.data import TrainData


class Task(ABC):
    """Base class; a family implements `train_batch`, `epoch_metrics` and `evaluate`."""

    model: nn.Module  # everything checkpointed as weights, under the "model." prefix
    optimizers: list[torch.optim.Optimizer]  # the first one's learning rate is the schedule's base
    amp: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None  # fp16 loss scaling, whose state resume must carry

    def __init__(self, spec: JobSpec, data: TrainData, device: torch.device) -> None:
        self.spec, self.data, self.device = spec, data, device

    @property
    def precision(self) -> str:
        """What the job reports and a resumed attempt keeps: fp32, or the autocast dtype."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.amp, str(self.amp))

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @abstractmethod
    def train_batch(self, xb: torch.Tensor, yb: torch.Tensor, epoch: int) -> torch.Tensor:
        """One step (or a family's group of updates) on a batch; returns the loss a user watches."""

    @abstractmethod
    def epoch_metrics(self, seen: int) -> dict[str, float]:
        """The epoch's training metrics (means over `seen` samples); resets the sums."""

    @abstractmethod
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Metrics on held-out data, named as in `epoch_metrics` (the engine adds `val_`/`test_`)."""

    def epoch_end(self, epoch: int) -> dict[str, float]:
        """Extra per-epoch figures (a GAN's sample quality); called after evaluation."""
        return {}

    def start_epoch(self, epoch: int) -> None:  # noqa: B027 - an optional hook, empty by default
        """Before an epoch's first batch (a DBN switches from pretraining to fine-tuning here)."""

    def extra_state(self) -> dict[str, Any]:
        """JSON-safe state beyond weights and optimizers, saved in every checkpoint."""
        return {} if self.scaler is None else {"grad_scaler": self.scaler.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and "grad_scaler" in state:
            self.scaler.load_state_dict(state["grad_scaler"])

    def describe(self) -> dict[str, Any]:
        """Saved in the final model's JSON for predict (e.g. a VAE's latent size)."""
        return {}


# family -> module defining `TASK` (imported on first use: a worker loads only what it trains)
FAMILIES = {name: record.trainer_module for name, record in REGISTRY.items()}


def make_task(spec: JobSpec, data: TrainData, device: torch.device) -> Task:
    module = importlib.import_module(FAMILIES[spec.family])
    task: Task = module.TASK(spec, data, device)
    return task

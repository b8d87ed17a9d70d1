"""What a model family plugs into the engine: its modules, optimizers, one training step and
its evaluation. The engine owns everything else (batches, epochs, schedules, early stopping,
checkpoints, resume, callbacks), so every family streams metrics and resumes the same way.

A task adds each batch's metric sums to `self.sums` (a `RunningSums`), which `epoch_metrics`
turns into the epoch's means. The supervised task folds its CPU metrics in groups and adds them
as numbers; every other sum stays a tensor on the device until the epoch ends. A GAN keeps its
own packed sums. Held-out data is scored by `evaluate_in_batches`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from core.spec import JobSpec
from core.spec.families import REGISTRY
from worker.training.data import TrainData

Sum = torch.Tensor | float  # a metric summed over a batch's samples


class RunningSums:
    """Per-metric sums over the batches of an epoch or an evaluation. A tensor is added as a
    tensor on its device (queued work, no host sync per step on a GPU) and read once, by
    `take_means`; a float (the supervised task's CPU sums) adds as a float."""

    def __init__(self) -> None:
        self.values: dict[str, Sum] = {}

    def add(self, **sums: Sum) -> None:
        for key, value in sums.items():
            # The first value is kept as it is: no zero to allocate, and the same float result.
            self.values[key] = self.values[key] + value if key in self.values else value

    def take_means(self, seen: int) -> dict[str, float]:
        """The means over `seen` samples, in the order the metrics were first added (one host read
        per tensor); starts new sums."""
        values, self.values = self.values, {}
        return {key: float(value) / seen for key, value in values.items()}


class Task(ABC):
    """Base class; a family implements `train_batch` and `evaluate`, adding its sums to `self.sums`."""

    eval_batch: int | None = (
        None  # held-out samples per forward pass; None: the fit's batch size, >= 1024
    )

    model: nn.Module  # everything checkpointed as weights, under the "model." prefix
    optimizers: list[torch.optim.Optimizer]  # the first one's learning rate is the schedule's base
    amp: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None  # fp16 loss scaling, whose state resume must carry

    def __init__(self, spec: JobSpec, data: TrainData, device: torch.device) -> None:
        self.spec, self.data, self.device = spec, data, device
        self.sums = RunningSums()

    @property
    def precision(self) -> str:
        """What the job reports and a resumed attempt keeps: fp32, or the autocast dtype."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(
            self.amp, str(self.amp)
        )

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @abstractmethod
    def train_batch(self, xb: torch.Tensor, yb: torch.Tensor, epoch: int) -> torch.Tensor:
        """One step (or a family's group of updates) on a batch; returns the loss a user watches."""

    def epoch_metrics(self, seen: int) -> dict[str, float]:
        """The epoch's training metrics (means over `seen` samples); resets the sums."""
        return self.sums.take_means(seen)

    @abstractmethod
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Metrics on held-out data, named as in `epoch_metrics` (the engine adds `val_`/`test_`)."""

    @torch.no_grad()
    def evaluate_in_batches(
        self, batch_sums: Callable[..., Mapping[str, torch.Tensor]], *data: torch.Tensor
    ) -> dict[str, float]:
        """Means over held-out samples of `batch_sums(*slices)`, called on the same slice of every
        tensor in `data` (x, y, a GAN's latents) with the model in eval mode. Batches of at least
        1024 samples keep the launches few; a family sets `eval_batch` where memory sets the size
        (seq2seq keeps every decoded step's logits)."""
        n, size = len(data[0]), self.eval_batch or max(self.spec.fit.batch_size, 1024)
        sums = RunningSums()
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, n, size):
                sums.add(**batch_sums(*(t[start : start + size] for t in data)))
        finally:
            self.model.train(was_training)
        return sums.take_means(n)

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

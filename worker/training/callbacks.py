"""Hooks the engine calls; the worker's metric sink, the CLI's progress bar and tests
implement them. The engine itself knows nothing of HTTP, Celery or the database."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainStart:
    epochs: int
    start_epoch: int  # epochs already done (resume)
    steps_per_epoch: int
    parameters: int
    device: str
    precision: str  # fp32, bf16 or fp16 (autocast's dtype)
    train_samples: int
    val_samples: int


@dataclass(frozen=True)
class CheckpointInfo:
    epoch: int
    path: Path
    sha256: str
    metrics: dict[str, float]
    pruned: tuple[int, ...] = ()  # older epochs' checkpoints deleted as this one was written


class Callback:
    """Every hook is optional; `should_stop` is asked once per step (cancellation)."""

    def on_train_start(self, start: TrainStart) -> None: ...

    def on_step_end(self, epoch: int, step: int, batch: int) -> None:
        """After every optimizer step: `step` counts from the start of training, `batch` within the epoch."""

    def on_step_loss(self, epoch: int, step: int, loss: float) -> None:
        """Every `fit.log_every_steps` steps."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None: ...

    def on_checkpoint(self, info: CheckpointInfo) -> None: ...

    def on_train_end(self, result: Any) -> None: ...

    def should_stop(self) -> bool:
        return False


class CallbackList(Callback):
    def __init__(self, callbacks: list[Callback]) -> None:
        self.callbacks = callbacks
        # The per-step hooks run thousands of times an epoch: call only the ones overridden.
        self._step_hooks = [
            c.on_step_end for c in callbacks if type(c).on_step_end is not Callback.on_step_end
        ]
        self._stops = [
            c.should_stop for c in callbacks if type(c).should_stop is not Callback.should_stop
        ]

    def on_train_start(self, start: TrainStart) -> None:
        for c in self.callbacks:
            c.on_train_start(start)

    def on_step_end(self, epoch: int, step: int, batch: int) -> None:
        for hook in self._step_hooks:
            hook(epoch, step, batch)

    def on_step_loss(self, epoch: int, step: int, loss: float) -> None:
        for c in self.callbacks:
            c.on_step_loss(epoch, step, loss)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        for c in self.callbacks:
            c.on_epoch_end(epoch, metrics)

    def on_checkpoint(self, info: CheckpointInfo) -> None:
        for c in self.callbacks:
            c.on_checkpoint(info)

    def on_train_end(self, result: Any) -> None:
        for c in self.callbacks:
            c.on_train_end(result)

    def should_stop(self) -> bool:
        return any(stop() for stop in self._stops)
